// Queue metrics from small aggregate tables kept exact on every transition (lib/model.ts):
// no table scan, no capped count. Every read walks an index with a bound that does not grow
// with the number of jobs.
import { v, type Infer } from "convex/values";
import { internalMutation, internalQuery, query, type QueryCtx } from "./_generated/server";
import { requireWorkerOrOperator } from "./lib/auth";
import { oldestExpired, oldestReady, queueMinute, readCounter, statsStart, statusKey } from "./lib/model";
import {
  HISTOGRAM_SIZE,
  JOB_STATUSES,
  MAX_RETRY_AFTER_MS,
  QUEUE_BUCKET_MS,
  STATS_BUCKET_MS,
  STATS_RETENTION_MS,
  histogramQuantile,
} from "./lib/policy";
import type { Doc } from "./_generated/dataModel";

const HOUR_BUCKETS = 60 / (STATS_BUCKET_MS / 60_000);
const DAY_BUCKETS = 24 * HOUR_BUCKETS;
// runAt is never later than now + MAX_RETRY_AFTER_MS (backoff is shorter), so this bounds
// the number of future queue buckets.
const MAX_FUTURE_QUEUE_BUCKETS = MAX_RETRY_AFTER_MS / QUEUE_BUCKET_MS + 2;
// Queued jobs due later in the current minute, walked one by one.
const CURRENT_MINUTE_WALK = 1_000;

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

function summarize(buckets: Doc<"statsBuckets">[]) {
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

const vQueueFigures = v.object({
  now: v.number(),
  counts: v.object({
    pending: v.number(),
    claimed: v.number(),
    running: v.number(),
    completed: v.number(),
    failed: v.number(),
    dead: v.number(),
    canceled: v.number(),
  }),
  ready: v.number(),
  scheduled: v.number(),
  inProgress: v.number(),
  oldestReadyAgeMs: v.union(v.number(), v.null()),
  oldestExpiredLeaseAgeMs: v.union(v.number(), v.null()),
  lastHour: vWindow,
  lastDay: vWindow,
});
export type QueueFigures = Infer<typeof vQueueFigures>;

/**
 * The queue's figures, read once for every reader: `metrics:queue` (JSON, worker or operator
 * token) and the Prometheus endpoint of http.ts (`GET /metrics`, scrape token), which renders
 * whatever this returns (lib/exposition.ts), so a new figure reaches both.
 * - counts: jobs per status (exact);
 * - ready: queued jobs with runAt <= now; scheduled: queued jobs waiting for a later runAt;
 * - inProgress: claimed + running; oldestReadyAgeMs: how long the oldest ready job has
 *   waited; oldestExpiredLeaseAgeMs: a lease nobody renewed or reclaimed (alert when set for
 *   more than a couple of minutes);
 * - lastHour / lastDay: outcomes in the last 12 / 288 five-minute buckets (the current one
 *   included). failed counts failed attempts that will retry (lease expiries included);
 *   successRate = completed / (completed + dead); durations are from start to completion,
 *   p95 is estimated from a histogram (exact within its bucket bounds).
 */
export async function queueFigures(ctx: QueryCtx): Promise<QueueFigures> {
  const now = Date.now();
  const values = await Promise.all(JOB_STATUSES.map((s) => readCounter(ctx, statusKey(s))));
  const counts = Object.fromEntries(JOB_STATUSES.map((s, i) => [s, values[i]])) as Record<
    (typeof JOB_STATUSES)[number],
    number
  >;

  // scheduled = queued jobs in later minutes + those due later in the current minute.
  const minute = queueMinute(now);
  const future = await ctx.db
    .query("queueBuckets")
    .withIndex("by_minute", (q) => q.gt("minute", minute))
    .take(MAX_FUTURE_QUEUE_BUCKETS);
  let scheduled = future.reduce((a, b) => a + b.count, 0);
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

  const [oldest, expired] = await Promise.all([oldestReady(ctx, now), oldestExpired(ctx, now)]);

  const current = statsStart(now);
  const day = await ctx.db
    .query("statsBuckets")
    .withIndex("by_start", (q) => q.gt("start", current - DAY_BUCKETS * STATS_BUCKET_MS))
    .take(DAY_BUCKETS + 1);
  const hour = day.filter((b) => b.start > current - HOUR_BUCKETS * STATS_BUCKET_MS);

  return {
    now,
    counts,
    ready,
    scheduled,
    inProgress: counts.claimed + counts.running,
    oldestReadyAgeMs: oldest === null ? null : now - oldest.runAt,
    oldestExpiredLeaseAgeMs: expired === null ? null : now - (expired.leaseUntil ?? now),
    lastHour: summarize(hour),
    lastDay: summarize(day),
  };
}

/** Queue metrics for operators and alerting (worker or operator token): queueFigures. */
export const queue = query({
  args: { token: v.optional(v.string()) },
  returns: vQueueFigures,
  handler: async (ctx, args) => {
    requireWorkerOrOperator(args.token);
    return await queueFigures(ctx);
  },
});

/**
 * The same figures for the Prometheus endpoint (http.ts): internal, so only the HTTP action
 * reaches it, after it checked the scrape token.
 */
export const queueFiguresInternal = internalQuery({
  args: {},
  returns: vQueueFigures,
  handler: async (ctx) => await queueFigures(ctx),
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
