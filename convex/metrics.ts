// Queue metrics from small aggregate tables (folded from queue events by the dispatcher,
// lib/aggregates.ts) plus the events not folded yet: exact at any moment, no table scan.
// Every read walks an index with a bound that does not grow with the number of jobs.
import { v, type Infer, type VFloat64 } from "convex/values";
import { internalMutation, internalQuery, query, type QueryCtx } from "./_generated/server";
import { requireWorkerOrOperator } from "./lib/auth";
import { vDispatcherMode } from "./lib/validators";
import {
  addStats,
  emptyStats,
  foldEvents,
  foldedCounts,
  queueMinute,
  statsStart,
  unfoldedEvents,
  type StatsDelta,
} from "./lib/aggregates";
import { dispatcherState } from "./lib/dispatcher";
import { oldestExpired, oldestReady } from "./lib/model";
import {
  HISTOGRAM_SIZE,
  JOB_STATUSES,
  MAX_RETRY_AFTER_MS,
  MAX_UNROLLED_EVENTS,
  MAX_WORKER_SLOTS,
  QUEUE_BUCKET_MS,
  STATS_BUCKET_MS,
  STATS_RETENTION_MS,
  histogramQuantile,
  type JobStatus,
} from "./lib/policy";

const HOUR_BUCKETS = 60 / (STATS_BUCKET_MS / 60_000);
const DAY_BUCKETS = 24 * HOUR_BUCKETS;
// runAt is never later than now + MAX_RETRY_AFTER_MS (backoff is shorter), so this bounds
// the number of future queue buckets.
const MAX_FUTURE_QUEUE_BUCKETS = MAX_RETRY_AFTER_MS / QUEUE_BUCKET_MS + 2;
// Queued jobs due later in the current minute, walked one by one.
const CURRENT_MINUTE_WALK = 1_000;
// Idle slots counted: a fleet of this many workers' slots (at most 32 each).
const MAX_IDLE_SLOTS_READ = 100 * MAX_WORKER_SLOTS;

const vWindow = v.object({
  completed: v.number(),
  failed: v.number(),
  dead: v.number(),
  canceled: v.number(),
  successRate: v.union(v.number(), v.null()),
  avgDurationMs: v.union(v.number(), v.null()),
  p95DurationMs: v.union(v.number(), v.null()),
  // completed jobs that left generated files out, and the files (summary.dropped)
  jobsWithDroppedDocs: v.number(),
  droppedDocs: v.number(),
});

function summarize(buckets: StatsDelta[]) {
  const histogram = new Array<number>(HISTOGRAM_SIZE).fill(0);
  let completed = 0;
  let failed = 0;
  let dead = 0;
  let canceled = 0;
  let durationCount = 0;
  let durationSumMs = 0;
  let durationMaxMs = 0;
  let jobsWithDroppedDocs = 0;
  let droppedDocs = 0;
  for (const b of buckets) {
    jobsWithDroppedDocs += b.jobsWithDroppedDocs ?? 0;
    droppedDocs += b.droppedDocs ?? 0;
    completed += b.completed;
    failed += b.failed;
    dead += b.dead;
    canceled += b.canceled;
    durationCount += b.durationCount;
    durationSumMs += b.durationSumMs;
    durationMaxMs = Math.max(durationMaxMs, b.durationMaxMs);
    b.histogram.forEach((c, i) => {
      if (i < HISTOGRAM_SIZE) histogram[i] += c;
    });
  }
  const finished = completed + dead;
  return {
    completed,
    failed,
    dead,
    canceled,
    successRate: finished === 0 ? null : completed / finished,
    avgDurationMs: durationCount === 0 ? null : Math.round(durationSumMs / durationCount),
    p95DurationMs: histogramQuantile(histogram, 0.95, durationMaxMs),
    jobsWithDroppedDocs,
    droppedDocs,
  };
}

const vCounts = v.object(
  Object.fromEntries(JOB_STATUSES.map((s) => [s, v.number()])) as Record<JobStatus, VFloat64<number, "required">>,
);

const vQueueFigures = v.object({
  now: v.number(),
  counts: vCounts,
  ready: v.number(),
  scheduled: v.number(),
  inProgress: v.number(),
  oldestReadyAgeMs: v.union(v.number(), v.null()),
  oldestExpiredLeaseAgeMs: v.union(v.number(), v.null()),
  // dispatch (dispatch.ts): idle worker slots offered, and the dispatcher's mode
  idleSlots: v.number(),
  dispatcher: vDispatcherMode,
  // queue events not folded into the counters yet (the dispatcher folds them within seconds)
  unfoldedEvents: v.number(),
  lastHour: vWindow,
  lastDay: vWindow,
});
export type QueueFigures = Infer<typeof vQueueFigures>;

/**
 * The queue's figures at `now`, read once for every reader: `metrics:queue` (JSON) and the
 * Prometheus endpoint of http.ts (`GET /metrics`, scrape token), which renders whatever
 * this returns (lib/exposition.ts), so a new figure reaches both: folded aggregates plus the events not folded yet, so every
 * count is exact. Bounded: a fixed number of index reads, at most MAX_UNROLLED_EVENTS
 * events, the day's stats buckets and the idle slots of the fleet.
 */
export async function queueFigures(ctx: QueryCtx, now: number): Promise<QueueFigures> {
  const [counts, events] = await Promise.all([foldedCounts(ctx), unfoldedEvents(ctx, MAX_UNROLLED_EVENTS)]);
  const pending = foldEvents(events);
  for (const [status, delta] of pending.counters) counts[status] += delta;

  // scheduled = queued jobs in later minutes + those due later in the current minute.
  const minute = queueMinute(now);
  const future = await ctx.db
    .query("queueBuckets")
    .withIndex("by_minute", (q) => q.gt("minute", minute))
    .take(MAX_FUTURE_QUEUE_BUCKETS);
  let scheduled = future.reduce((a, b) => a + b.count, 0);
  for (const [m, delta] of pending.queueMinutes) if (m > minute) scheduled += delta;
  for (const status of ["pending", "failed"] as const) {
    const later = await ctx.db
      .query("jobs")
      .withIndex("by_status_runAt", (q) =>
        q.eq("status", status).gt("runAt", now).lt("runAt", minute + QUEUE_BUCKET_MS),
      )
      .take(CURRENT_MINUTE_WALK);
    scheduled += later.length;
  }
  const queued = counts.pending + counts.failed;
  const ready = Math.max(0, queued - scheduled);

  const [oldest, expired, state] = await Promise.all([
    oldestReady(ctx, now),
    oldestExpired(ctx, now),
    dispatcherState(ctx),
  ]);
  const idleSlots = (
    await ctx.db
      .query("workerSlots")
      .withIndex("by_state_since", (q) => q.eq("state", "idle"))
      .take(MAX_IDLE_SLOTS_READ)
  ).length;

  const current = statsStart(now);
  const since = current - (DAY_BUCKETS - 1) * STATS_BUCKET_MS;
  const rows = await ctx.db
    .query("statsBuckets")
    .withIndex("by_start", (q) => q.gte("start", since))
    .take(DAY_BUCKETS + 1);
  const buckets = new Map<number, StatsDelta>(rows.map((r) => [r.start, addStats(r, emptyStats())]));
  for (const [start, delta] of pending.stats) {
    if (start >= since) buckets.set(start, addStats(buckets.get(start) ?? null, delta));
  }
  const day = [...buckets.entries()];
  const hour = day.filter(([start]) => start > current - HOUR_BUCKETS * STATS_BUCKET_MS);

  return {
    now,
    counts,
    ready,
    scheduled,
    inProgress: counts.assigned + counts.claimed + counts.running,
    oldestReadyAgeMs: oldest === null ? null : now - oldest.runAt,
    oldestExpiredLeaseAgeMs: expired === null ? null : now - (expired.leaseUntil ?? now),
    idleSlots,
    dispatcher: state?.mode ?? "idle",
    unfoldedEvents: events.length,
    lastHour: summarize(hour.map(([, b]) => b)),
    lastDay: summarize(day.map(([, b]) => b)),
  };
}

/**
 * Queue metrics for operators and alerting (worker or operator token).
 * - counts: jobs per status (exact); assigned jobs wait for their worker to accept them;
 * - ready: queued jobs with runAt <= now; scheduled: queued jobs waiting for a later runAt;
 * - inProgress: assigned + claimed + running; oldestReadyAgeMs: how long the oldest ready
 *   job has waited; oldestExpiredLeaseAgeMs: a lease nobody renewed or reclaimed (alert when
 *   set for more than a couple of minutes);
 * - idleSlots: worker slots offered for dispatch; dispatcher: its mode;
 * - lastHour / lastDay: outcomes in the last 12 / 288 five-minute buckets (the current one
 *   included). failed counts failed attempts that will retry (lease expiries included);
 *   successRate = completed / (completed + dead); durations are from start to completion,
 *   p95 is estimated from a histogram (exact within its bucket bounds).
 */
export const queue = query({
  args: { token: v.optional(v.string()) },
  returns: vQueueFigures,
  handler: async (ctx, args) => {
    await requireWorkerOrOperator(ctx, args.token);
    return await queueFigures(ctx, Date.now());
  },
});

/**
 * The same figures for the Prometheus endpoint (http.ts): internal, so only the HTTP action
 * reaches it, after it checked the scrape token.
 */
export const queueFiguresInternal = internalQuery({
  args: {},
  returns: vQueueFigures,
  handler: async (ctx) => await queueFigures(ctx, Date.now()),
});

/** Cron: delete stats buckets older than the retention (at most 100 per run). */
export const pruneStats = internalMutation({
  args: {},
  returns: v.object({ deleted: v.number() }),
  handler: async (ctx) => {
    const cutoff = Date.now() - STATS_RETENTION_MS;
    const old = await ctx.db
      .query("statsBuckets")
      .withIndex("by_start", (q) => q.lt("start", cutoff))
      .take(100);
    for (const b of old) await ctx.db.delete(b._id);
    return { deleted: old.length };
  },
});
