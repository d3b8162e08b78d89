// Shared fixtures for the convex-test suites.
import { convexTest } from "convex-test";
import { ConvexError } from "convex/values";
import { expect, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import schema from "../../convex/schema";
import { JOB_STATUSES, ROLLUP_BATCH, isQueued } from "../../convex/lib/policy";
import { foldEvents, queueMinute, rollupEvents } from "../../convex/lib/aggregates";

export const modules = import.meta.glob("../../convex/**/*.*s");
export const TOKEN = "test-worker-token-0123456789";
/** The operator token (OPERATOR_TOKEN): the only credential the operator functions accept. */
export const OPERATOR = "test-operator-token-9876543210";
export const T0 = Date.UTC(2025, 0, 6, 12, 0, 0);
export const REPO = "https://github.com/acme/widgets";

export function makeT(transactionLimits?: Record<string, number> | boolean) {
  return transactionLimits === undefined
    ? convexTest(schema, modules)
    : convexTest({ schema, modules, transactionLimits });
}
export type T = ReturnType<typeof makeT>;

/** Fake clock at T0, the worker and operator tokens in the environment. Call in beforeEach. */
export function setupEnv(): void {
  vi.useFakeTimers();
  vi.setSystemTime(T0);
  vi.stubEnv("WORKER_TOKEN", TOKEN);
  vi.stubEnv("OPERATOR_TOKEN", OPERATOR);
  vi.stubEnv("ALLOWED_REPO_HOSTS", "");
}
export function teardownEnv(): void {
  vi.unstubAllEnvs();
  vi.useRealTimers();
}

/**
 * Move the clock forward without firing timers. Note: convex-test never lets a transaction
 * start before the previous commit, so with a frozen fake clock its time creeps ahead by
 * about 1 ms per committed mutation. Tests leave margins for that.
 */
export function advance(ms: number): void {
  vi.setSystemTime(Date.now() + ms);
}

let requestCounter = 0;
export function newRequestId(): string {
  requestCounter += 1;
  return `req-${requestCounter}`;
}

export async function enqueue(
  t: T,
  extra: Partial<{
    repoUrl: string;
    branch: string;
    dedupeKey: string;
    githubToken: string;
    maxAttempts: number;
    userId: string;
  }> = {},
) {
  const r = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, ...extra });
  return r.jobId;
}

/** One dispatcher tick now (what the scheduled chain would run), whatever its mode. */
export async function dispatch(t: T) {
  const epoch = await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())?.epoch ?? null);
  if (epoch === null) return null;
  return await t.mutation(internal.dispatch.tick, { epoch, idleTicks: 0 });
}

/** Fold every queue event into the counters, as dispatcher ticks do a second after each. */
export async function foldAll(t: T): Promise<void> {
  for (;;) {
    const folded = await t.run(async (ctx) => await rollupEvents(ctx, Number.MAX_SAFE_INTEGER, ROLLUP_BATCH));
    if (folded < ROLLUP_BATCH) return;
  }
}

/**
 * A worker's claim as the worker does it: offer its slot (or accept what it was assigned),
 * a dispatcher tick, accept. A claim that finds nothing withdraws the slot again, so an
 * idle slot of one test step never takes a job meant for the next.
 */
export async function claim(t: T, workerId = "w1", leaseMs = 60_000, requestId = newRequestId()) {
  const args = { token: TOKEN, workerId, leaseMs, requestId };
  const first = await t.mutation(api.jobs.claimOne, args);
  if (first !== null) return first;
  await dispatch(t);
  const second = await t.mutation(api.jobs.claimOne, args);
  if (second === null) await t.mutation(api.jobs.withdraw, { token: TOKEN, workerId });
  return second;
}

export async function claimOk(t: T, workerId = "w1", leaseMs = 60_000) {
  const c = await claim(t, workerId, leaseMs);
  if (c === null) throw new Error("expected a claim");
  return c;
}

export async function getJob(t: T, jobId: string) {
  const j = await t.query(api.jobs.get, { jobId, token: OPERATOR });
  if (j === null) throw new Error("no such job");
  return j;
}

/** The raw job row (with secret fields), for assertions about internals. */
export async function rawJob(t: T, jobId: string) {
  return await t.run(async (ctx) => {
    const id = ctx.db.normalizeId("jobs", jobId);
    return id === null ? null : await ctx.db.get(id);
  });
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  let caught: unknown = undefined;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected ConvexError ${code}`).toBeInstanceOf(ConvexError);
  expect((caught as ConvexError<{ code: string }>).data.code).toBe(code);
}

/**
 * The aggregates kept by setStatus must equal what a full scan finds: per-status counters,
 * queue buckets (queued jobs per runAt minute), and no secrets for ended jobs.
 */
export async function expectAggregatesExact(t: T): Promise<void> {
  const report = await t.run(async (ctx) => {
    const jobs = await ctx.db.query("jobs").collect();
    const counters = await ctx.db.query("counters").collect();
    const buckets = await ctx.db.query("queueBuckets").collect();
    const events = await ctx.db.query("queueEvents").collect();
    const secrets = await ctx.db.query("jobSecrets").collect();
    return { jobs, counters, buckets, events, secrets };
  });
  // What readers see: the folded tables plus the events not folded yet.
  const pending = foldEvents(report.events);
  for (const s of JOB_STATUSES) {
    const actual = report.jobs.filter((j) => j.status === s).length;
    const counter =
      (report.counters.find((c) => c.key === `status:${s}`)?.value ?? 0) + (pending.counters.get(s) ?? 0);
    expect(counter, `counter for ${s}`).toBe(actual);
  }
  const perMinute = new Map<number, number>();
  for (const j of report.jobs) {
    if (isQueued(j.status)) {
      const m = queueMinute(j.runAt);
      perMinute.set(m, (perMinute.get(m) ?? 0) + 1);
    }
  }
  const fromBuckets = new Map(report.buckets.map((b) => [b.minute, b.count]));
  for (const [m, d] of pending.queueMinutes) fromBuckets.set(m, (fromBuckets.get(m) ?? 0) + d);
  for (const [m, c] of fromBuckets) if (c === 0) fromBuckets.delete(m);
  expect(fromBuckets).toEqual(perMinute);
  const ended = new Set(
    report.jobs
      .filter((j) => j.status === "completed" || j.status === "dead" || j.status === "canceled")
      .map((j) => j._id as string),
  );
  for (const s of report.secrets) expect(ended.has(s.jobId as string)).toBe(false);
}
