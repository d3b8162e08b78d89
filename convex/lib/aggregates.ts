// The queue's counters without a hot document. A transition inserts one queueEvents row
// (an insert never collides with another mutation's writes); the dispatcher, the one
// writer of the aggregate tables, folds settled events into `counters`, `queueBuckets` and
// `statsBuckets` (rollupEvents). Readers add the events not folded yet (applyEvents), so
// every figure stays exact at any moment.
import type { Doc } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import {
  HISTOGRAM_SIZE,
  JOB_STATUSES,
  QUEUE_BUCKET_MS,
  STATS_BUCKET_MS,
  histogramIndex,
  isQueued,
  type JobStatus,
  type Outcome,
} from "./policy";

export type QueueEvent = Omit<Doc<"queueEvents">, "_id" | "_creationTime">;

export function statusKey(status: JobStatus): string {
  return `status:${status}`;
}

export function queueMinute(runAt: number): number {
  return Math.floor(runAt / QUEUE_BUCKET_MS) * QUEUE_BUCKET_MS;
}

export function statsStart(now: number): number {
  return Math.floor(now / STATS_BUCKET_MS) * STATS_BUCKET_MS;
}

/** One transition's event: counts move from `from` to `to`, queued jobs between runAt minutes. */
export function transitionEvent(
  now: number,
  from: JobStatus | undefined,
  to: JobStatus,
  fromRunAt: number | undefined,
  toRunAt: number,
  stats: { outcome?: Outcome; durationMs?: number; droppedDocs?: number } = {},
): QueueEvent {
  const event: QueueEvent = { at: now, to };
  if (from !== undefined) event.from = from;
  if (from !== undefined && isQueued(from) && fromRunAt !== undefined) event.fromRunAt = fromRunAt;
  if (isQueued(to)) event.toRunAt = toRunAt;
  if (stats.outcome !== undefined) event.outcome = stats.outcome;
  if (stats.durationMs !== undefined) event.durationMs = Math.max(0, stats.durationMs);
  if (stats.droppedDocs !== undefined && stats.droppedDocs > 0) event.droppedDocs = stats.droppedDocs;
  return event;
}

export async function recordEvent(ctx: MutationCtx, event: QueueEvent): Promise<void> {
  if (event.from === event.to && event.fromRunAt === event.toRunAt && event.outcome === undefined) return;
  await ctx.db.insert("queueEvents", event);
}

// ---------------------------------------------------------------- folding (pure)

export type StatsDelta = {
  completed: number;
  failed: number;
  dead: number;
  canceled: number;
  durationCount: number;
  durationSumMs: number;
  durationMaxMs: number;
  histogram: number[];
  jobsWithDroppedDocs: number;
  droppedDocs: number;
};

export function emptyStats(): StatsDelta {
  return {
    completed: 0,
    failed: 0,
    dead: 0,
    canceled: 0,
    durationCount: 0,
    durationSumMs: 0,
    durationMaxMs: 0,
    histogram: new Array<number>(HISTOGRAM_SIZE).fill(0),
    jobsWithDroppedDocs: 0,
    droppedDocs: 0,
  };
}

/** What a list of events changes: counter, queue-minute and stats-bucket deltas. */
export type Deltas = {
  counters: Map<JobStatus, number>;
  queueMinutes: Map<number, number>;
  stats: Map<number, StatsDelta>;
};

export function foldEvents(events: readonly QueueEvent[]): Deltas {
  const deltas: Deltas = { counters: new Map(), queueMinutes: new Map(), stats: new Map() };
  const add = <K>(m: Map<K, number>, k: K, d: number) => m.set(k, (m.get(k) ?? 0) + d);
  for (const e of events) {
    if (e.from !== undefined) add(deltas.counters, e.from, -1);
    add(deltas.counters, e.to, 1);
    if (e.fromRunAt !== undefined) add(deltas.queueMinutes, queueMinute(e.fromRunAt), -1);
    if (e.toRunAt !== undefined) add(deltas.queueMinutes, queueMinute(e.toRunAt), 1);
    if (e.outcome !== undefined) {
      const start = statsStart(e.at);
      let s = deltas.stats.get(start);
      if (s === undefined) deltas.stats.set(start, (s = emptyStats()));
      s[e.outcome] += 1;
      if (e.durationMs !== undefined) {
        s.durationCount += 1;
        s.durationSumMs += e.durationMs;
        s.durationMaxMs = Math.max(s.durationMaxMs, e.durationMs);
        s.histogram[histogramIndex(e.durationMs)] += 1;
      }
      if (e.droppedDocs !== undefined) {
        s.jobsWithDroppedDocs += 1;
        s.droppedDocs += e.droppedDocs;
      }
    }
  }
  return deltas;
}

/** A stats bucket with a delta added (the bucket row's shape, for readers and the rollup). */
export function addStats(
  row: Pick<Doc<"statsBuckets">, keyof StatsDelta> | null,
  d: StatsDelta,
): StatsDelta {
  const base = row ?? emptyStats();
  const histogram = base.histogram.slice();
  while (histogram.length < HISTOGRAM_SIZE) histogram.push(0);
  d.histogram.forEach((c, i) => {
    if (i < HISTOGRAM_SIZE) histogram[i] += c;
  });
  return {
    completed: base.completed + d.completed,
    failed: base.failed + d.failed,
    dead: base.dead + d.dead,
    canceled: base.canceled + d.canceled,
    durationCount: base.durationCount + d.durationCount,
    durationSumMs: base.durationSumMs + d.durationSumMs,
    durationMaxMs: Math.max(base.durationMaxMs, d.durationMaxMs),
    histogram,
    jobsWithDroppedDocs: (base.jobsWithDroppedDocs ?? 0) + d.jobsWithDroppedDocs,
    droppedDocs: (base.droppedDocs ?? 0) + d.droppedDocs,
  };
}

// ---------------------------------------------------------------- reading

/** The events not folded yet, oldest first (at most `limit`). */
export async function unfoldedEvents(ctx: QueryCtx, limit: number): Promise<Doc<"queueEvents">[]> {
  return await ctx.db.query("queueEvents").withIndex("by_at").take(limit);
}

async function counterRow(ctx: QueryCtx, key: string) {
  return await ctx.db
    .query("counters")
    .withIndex("by_key", (q) => q.eq("key", key))
    .unique();
}

/** Folded per-status counts (without the events not folded yet). */
export async function foldedCounts(ctx: QueryCtx): Promise<Record<JobStatus, number>> {
  const values = await Promise.all(JOB_STATUSES.map(async (s) => (await counterRow(ctx, statusKey(s)))?.value ?? 0));
  return Object.fromEntries(JOB_STATUSES.map((s, i) => [s, values[i]])) as Record<JobStatus, number>;
}

// ---------------------------------------------------------------- the rollup (one writer)

/**
 * Fold events older than `cutoff` (at most `limit`) into the aggregate tables and delete
 * them. Only the dispatcher calls this, so these tables have one writer. Events newer than
 * `cutoff` (ROLLUP_SETTLE_MS) are left alone: the range this reads is one no mutation in
 * flight writes into. Returns how many events it folded.
 */
export async function rollupEvents(ctx: MutationCtx, cutoff: number, limit: number): Promise<number> {
  const events = await ctx.db
    .query("queueEvents")
    .withIndex("by_at", (q) => q.lt("at", cutoff))
    .take(limit);
  if (events.length === 0) return 0;
  const deltas = foldEvents(events);
  for (const [status, delta] of deltas.counters) {
    if (delta === 0) continue;
    const key = statusKey(status);
    const row = await counterRow(ctx, key);
    if (row === null) await ctx.db.insert("counters", { key, value: delta });
    else await ctx.db.patch(row._id, { value: row.value + delta });
  }
  for (const [minute, delta] of deltas.queueMinutes) {
    if (delta === 0) continue;
    const row = await ctx.db
      .query("queueBuckets")
      .withIndex("by_minute", (q) => q.eq("minute", minute))
      .unique();
    const count = (row?.count ?? 0) + delta;
    if (row === null) {
      if (count !== 0) await ctx.db.insert("queueBuckets", { minute, count });
    } else if (count === 0) await ctx.db.delete(row._id);
    else await ctx.db.patch(row._id, { count });
  }
  for (const [start, delta] of deltas.stats) {
    const row = await ctx.db
      .query("statsBuckets")
      .withIndex("by_start", (q) => q.eq("start", start))
      .unique();
    const merged = addStats(row, delta);
    if (row === null) await ctx.db.insert("statsBuckets", { start, ...merged });
    else await ctx.db.patch(row._id, merged);
  }
  for (const e of events) await ctx.db.delete(e._id);
  return events.length;
}
