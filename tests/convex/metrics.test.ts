// metrics:queue on seeded tables: exact against a full scan, and bounded by design (it
// runs under tight per-transaction read limits on a table of thousands of jobs).
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { claimOne } from "../../convex/jobs";
import { statsStart } from "../../convex/lib/aggregates";
import { queue } from "../../convex/metrics";
import { DURATION_BOUNDS_MS, JOB_STATUSES, STATS_BUCKET_MS, histogramIndex } from "../../convex/lib/policy";
import {
  OPERATOR,
  REPO,
  T0,
  TOKEN,
  advance,
  claimOk,
  dispatch,
  enqueue,
  expectAggregatesExact,
  foldAll,
  makeT,
  rawJob,
  setupEnv,
  teardownEnv,
  type T,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const HOUR = 3_600_000;

/** Twenty-six hours of traffic: completions of varied duration, failures, deaths, cancels. */
async function seedHistory(t: T) {
  const failedAt: number[] = [];
  for (let h = 0; h < 26; h++) {
    vi.setSystemTime(T0 + h * HOUR + 60_000);
    for (let i = 0; i < 20; i++) await enqueue(t, { userId: `u${i % 3}` });
    for (let i = 0; i < 20; i++) {
      const c = await claimOk(t, `w${i % 4}`, HOUR);
      const lease = { token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken };
      await t.mutation(api.jobs.start, lease);
      advance((i + 1) * 7_000 + h * 1_000);
      switch (i % 10) {
        case 6: {
          const r = await t.mutation(api.jobs.retryOrFail, { ...lease, error: "flaky", errorKind: "transient" });
          if (r.status === "failed") failedAt.push((await rawJob(t, c.jobId))!.updatedAt);
          break;
        }
        case 7:
          await t.mutation(api.jobs.retryOrFail, { ...lease, error: "gone", errorKind: "repository_not_found" });
          break;
        case 8:
          await t.mutation(api.jobs.cancel, { jobId: c.jobId, token: OPERATOR });
          await t.mutation(api.jobs.acknowledgeCancel, lease);
          break;
        case 9:
          await t.mutation(api.jobs.release, { ...lease, reason: "restart" });
          break;
        default:
          await t.mutation(api.jobs.complete, { ...lease, runId: "r", summary: { docsCount: 0, durationMs: 1 } });
      }
    }
  }
  // The present: ready jobs, deferred ones, a healthy lease and an expired one.
  vi.setSystemTime(T0 + 26 * HOUR + 60_000);
  for (let i = 0; i < 30; i++) await enqueue(t);
  for (let i = 0; i < 4; i++) {
    const c = await claimOk(t);
    await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, error: "limit", errorKind: "usage_limit",
      retryAfterMs: (i + 1) * HOUR,
    });
  }
  await claimOk(t, "healthy", HOUR);
  await claimOk(t, "crashed", 60_000);
  advance(10 * 60_000);
  return failedAt;
}

function exactP95(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil(0.95 * sorted.length) - 1];
}

// 520 jobs through the worker's calls and a dispatcher tick each: give it time on a busy machine.
test("metrics equal what a full scan finds", { timeout: 240_000 }, async () => {
  const t = makeT();
  const failedAt = await seedHistory(t);
  await expectAggregatesExact(t);
  const m = await t.query(api.metrics.queue, { token: TOKEN });
  const jobs = await t.run(async (ctx) => await ctx.db.query("jobs").collect());
  const now = m.now;

  const counts = Object.fromEntries(
    JOB_STATUSES.map((s) => [
      s,
      jobs.filter((j) => j.status === s).length,
    ]),
  );
  expect(m.counts).toEqual(counts);
  const queued = jobs.filter((j) => j.status === "pending" || j.status === "failed");
  const ready = queued.filter((j) => j.runAt <= now);
  expect(m.ready).toBe(ready.length);
  expect(m.scheduled).toBe(queued.length - ready.length);
  expect(m.scheduled).toBeGreaterThanOrEqual(4);
  expect(m.inProgress).toBe(counts.assigned + counts.claimed + counts.running);
  expect(m.oldestReadyAgeMs).toBe(now - Math.min(...ready.map((j) => j.runAt)));
  const expired = jobs.filter(
    (j) => (j.status === "claimed" || j.status === "running") && (j.leaseUntil ?? 0) < now,
  );
  expect(expired).toHaveLength(1);
  expect(m.oldestExpiredLeaseAgeMs).toBe(now - expired[0].leaseUntil!);

  const current = statsStart(now);
  for (const [window, buckets] of [
    [m.lastHour, 12],
    [m.lastDay, 288],
  ] as const) {
    const inWindow = (at: number) => statsStart(at) > current - buckets * STATS_BUCKET_MS;
    const ended = (s: string) => jobs.filter((j) => j.status === s && inWindow(j.completedAt!));
    const completed = ended("completed");
    const durations = completed.map((j) => j.completedAt! - j.startedAt!);
    expect(window.completed).toBe(completed.length);
    expect(window.dead).toBe(ended("dead").length);
    expect(window.canceled).toBe(ended("canceled").length);
    expect(window.failed).toBe(failedAt.filter(inWindow).length);
    expect(window.successRate).toBeCloseTo(completed.length / (completed.length + ended("dead").length), 10);
    expect(window.avgDurationMs).toBe(Math.round(durations.reduce((a, b) => a + b, 0) / durations.length));
    // p95: within the histogram bucket that holds the exact p95
    const exact = exactP95(durations);
    const i = histogramIndex(exact);
    expect(window.p95DurationMs).toBeGreaterThanOrEqual(i === 0 ? 0 : DURATION_BOUNDS_MS[i - 1]);
    expect(window.p95DurationMs).toBeLessThanOrEqual(Math.min(DURATION_BOUNDS_MS[i] ?? Infinity, Math.max(...durations)));
  }
  expect(m.lastHour.completed).toBeGreaterThan(0);
  expect(m.lastDay.completed).toBeGreaterThan(m.lastHour.completed);
  // older than a day is not counted
  expect(m.lastDay.completed).toBeLessThan(counts.completed);
});

test("an empty queue", async () => {
  const t = makeT();
  const m = await t.query(api.metrics.queue, { token: TOKEN });
  expect(m).toMatchObject({
    counts: { pending: 0, assigned: 0, claimed: 0, running: 0, completed: 0, failed: 0, dead: 0, canceled: 0 },
    ready: 0,
    scheduled: 0,
    inProgress: 0,
    oldestReadyAgeMs: null,
    oldestExpiredLeaseAgeMs: null,
  });
  expect(m.lastDay).toEqual({
    completed: 0, failed: 0, dead: 0, canceled: 0, successRate: null, avgDurationMs: null, p95DurationMs: null,
    jobsWithDroppedDocs: 0, droppedDocs: 0,
  });
});

describe("bounded by design", () => {
  // Reads of one call, measured inside the transaction (ctx.meta.getTransactionMetrics).
  type Registered = { _handler: (ctx: unknown, args: unknown) => Promise<unknown> };
  async function metricsReads(t: T): Promise<number> {
    return await t.query(async (ctx) => {
      await (queue as unknown as Registered)._handler(ctx, { token: TOKEN });
      return (await ctx.meta.getTransactionMetrics()).documentsRead.used;
    });
  }
  /** Reads of the claim that accepts an assignment (the offer and the tick come first). */
  async function claimReads(t: T, requestId: string): Promise<number> {
    const args = { token: TOKEN, workerId: "probe", leaseMs: HOUR, requestId };
    expect(await t.mutation(api.jobs.claimOne, args)).toBeNull();
    await dispatch(t);
    return await t.mutation(async (ctx) => {
      const c = await (claimOne as unknown as Registered)._handler(ctx, args);
      expect(c).not.toBeNull();
      return (await ctx.meta.getTransactionMetrics()).documentsRead.used;
    });
  }

  // Thousands of jobs through convex-test's in-memory indexes: give it time on a busy machine.
  test("reads per call do not grow with the table; a scan is refused under the same limits", { timeout: 240_000 }, async () => {
    // Half the table, far below Convex's 32,000: a full scan cannot pass, bounded reads do.
    const t = makeT({ documentsRead: 1_000 });
    // a day of outcomes in every 5-minute bucket, then 50 crashed leases and 100 waiting jobs
    for (let b = 0; b < 300; b++) {
      const jobId = await enqueue(t);
      const c = await claimOk(t, "w", HOUR);
      expect(c.jobId).toBe(jobId);
      await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
      advance(STATS_BUCKET_MS);
      await t.mutation(api.jobs.complete, {
        token: TOKEN, jobId, leaseToken: c.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
      });
    }
    for (let i = 0; i < 150; i++) await enqueue(t);
    for (let i = 0; i < 50; i++) await claimOk(t, "crashed", 60_000);
    advance(120_000);
    // The dispatcher folds queue events within a second or two of them (ticks run on every
    // queue change): measure what metrics reads beside a folded log.
    await foldAll(t);
    const smallMetrics = await metricsReads(t);
    const smallClaim = await claimReads(t, "probe-1");

    const MORE = 1_700; // convex-test scans in memory, so seeding is O(n^2): keep it modest
    for (let i = 0; i < MORE; i++) {
      await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR });
      if (i % 500 === 0) advance(1_000);
    }
    await foldAll(t);
    const bigMetrics = await metricsReads(t);
    const bigClaim = await claimReads(t, "probe-2");
    console.log(
      `documents read: metrics ${smallMetrics} -> ${bigMetrics}, claim ${smallClaim} -> ${bigClaim} ` +
        `(table grew by ${MORE} jobs)`,
    );
    expect(smallMetrics).toBeLessThan(400);
    expect(bigMetrics).toBeLessThanOrEqual(smallMetrics + 2); // +1 stats bucket at most
    expect(smallClaim).toBeLessThan(10);
    expect(bigClaim).toBeLessThanOrEqual(smallClaim);

    await expect(t.run(async (ctx) => (await ctx.db.query("jobs").collect()).length)).rejects.toThrow(
      /too many documents/i,
    );

    const m = await t.query(api.metrics.queue, { token: TOKEN });
    expect(m.counts.completed).toBe(300);
    // The probe claims' dispatcher ticks took the 50 crashed leases back to the queue.
    expect(m.counts.pending).toBe(150 - 2 + MORE);
    expect(m.ready).toBe(m.counts.pending);
    expect(m.inProgress).toBe(2);
    expect(m.unfoldedEvents).toBeGreaterThan(0); // the probe claims' own, not folded: still counted
    expect(m.lastDay.completed).toBeGreaterThanOrEqual(287);
    expect(m.lastDay.avgDurationMs).toBeGreaterThanOrEqual(STATS_BUCKET_MS - 100); // fake-clock creep
    expect(m.oldestExpiredLeaseAgeMs).toBeNull();
    expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 0, dead: 0, canceled: 0 });
  });
});

test("pruneStats deletes buckets older than the retention, a bounded batch at a time", async () => {
  const t = makeT();
  for (let i = 0; i < 3; i++) {
    await enqueue(t);
    const c = await claimOk(t);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
    });
    advance(STATS_BUCKET_MS);
  }
  expect(await t.mutation(internal.metrics.pruneStats, {})).toEqual({ deleted: 0 });
  advance(3 * 24 * HOUR);
  await foldAll(t); // the last completion's event, still in the log
  expect(await t.mutation(internal.metrics.pruneStats, {})).toEqual({ deleted: 3 });
  const m = await t.query(api.metrics.queue, { token: TOKEN });
  expect(m.lastDay.completed).toBe(0);
  expect(m.counts.completed).toBe(3); // status counts are not windowed
});
