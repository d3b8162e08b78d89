// The reclaim cron: expired leases come back (or end), bounded work per run.
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import crons from "../../convex/crons";
import { RECLAIM_BATCH } from "../../convex/lib/policy";
import {
  OPERATOR,
  TOKEN,
  advance,
  claimOk,
  enqueue,
  expectAggregatesExact,
  getJob,
  makeT,
  setupEnv,
  teardownEnv,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

test("the upkeep cron (a dispatcher tick: reclaim, unaccepted assignments, counters) runs every 30 s", () => {
  const all = (crons as unknown as { crons: Record<string, { name: string; schedule: unknown }> }).crons;
  expect(all["queue upkeep"]).toMatchObject({
    name: "dispatch:maintain",
    schedule: { type: "interval", seconds: 30 },
  });
  expect(all["prune metrics buckets"]).toMatchObject({ name: "metrics:pruneStats" });
});

test("moves, kills and cancels the right jobs and reports how many", async () => {
  const t = makeT();
  const movable = await enqueue(t);
  const lastAttempt = await enqueue(t, { maxAttempts: 1 });
  const canceling = await enqueue(t);
  const healthy = await enqueue(t);
  const untouched = await enqueue(t);
  const cm = await claimOk(t, "w", 10_000);
  const cl = await claimOk(t, "w", 10_000);
  const cc = await claimOk(t, "w", 10_000);
  await claimOk(t, "w", 120_000);
  expect([cm.jobId, cl.jobId, cc.jobId]).toEqual([movable, lastAttempt, canceling]);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId: movable, leaseToken: cm.leaseToken });
  await t.mutation(api.jobs.cancel, { jobId: canceling, token: OPERATOR });

  expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 0, dead: 0, canceled: 0 });
  advance(20_000);
  expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 1, dead: 1, canceled: 1 });
  expect(await getJob(t, movable)).toMatchObject({ status: "pending", attempts: 1, lastErrorKind: "lease_expired" });
  expect(await getJob(t, lastAttempt)).toMatchObject({ status: "dead", lastErrorKind: "lease_expired" });
  expect((await getJob(t, canceling)).status).toBe("canceled");
  expect((await getJob(t, healthy)).status).toBe("claimed");
  expect((await getJob(t, untouched)).status).toBe("pending");
  // idempotent: nothing left to do
  expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 0, dead: 0, canceled: 0 });
  await expectAggregatesExact(t);
});

test("work per run is bounded; the next run continues", async () => {
  const t = makeT();
  const n = RECLAIM_BATCH + 30;
  for (let i = 0; i < n; i++) await enqueue(t);
  for (let i = 0; i < n; i++) await claimOk(t, `w${i % 8}`, 5_000);
  advance(60_000); // generous: the frozen fake clock creeps 1 ms per commit
  expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: RECLAIM_BATCH, dead: 0, canceled: 0 });
  expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 30, dead: 0, canceled: 0 });
  await expectAggregatesExact(t);
});

test("a full batch continues in a scheduled run, each within Convex's limits", async () => {
  const t = makeT(true);
  const n = RECLAIM_BATCH * 2 + 10;
  for (let i = 0; i < n; i++) await enqueue(t);
  for (let i = 0; i < n; i++) await claimOk(t, `w${i % 8}`, 5_000);
  advance(60_000);
  expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: RECLAIM_BATCH, dead: 0, canceled: 0 });
  await t.finishAllScheduledFunctions(() => vi.runAllTimers());
  const stillLeased = await t.run(
    async (ctx) => (await ctx.db.query("jobs").collect()).filter((j) => j.status === "claimed").length,
  );
  expect(stillLeased).toBe(0);
  await expectAggregatesExact(t);
});

test("a crashed worker's job is back within one lease plus one cron interval", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const leaseMs = 60_000;
  await claimOk(t, "crashed", leaseMs);
  // the cron runs every minute; run it on that schedule and see when the job returns
  let waited = 0;
  while ((await getJob(t, jobId)).status !== "pending") {
    advance(60_000);
    waited += 60_000;
    await t.mutation(internal.jobs.reclaimExpired, {});
  }
  expect(waited).toBeLessThanOrEqual(leaseMs + 60_000);
  expect((await claimOk(t, "healthy")).jobId).toBe(jobId);
});

test("recoverWorker: a restarted worker gives back what its predecessor held, at once", async () => {
  const t = makeT();
  const a = await enqueue(t, { repoUrl: "https://github.com/acme/a" });
  const b = await enqueue(t, { repoUrl: "https://github.com/acme/b" });
  const last = await enqueue(t, { repoUrl: "https://github.com/acme/c", maxAttempts: 1 });
  const other = await enqueue(t, { repoUrl: "https://github.com/acme/d" });
  const ca = await claimOk(t, "host-1");
  const cb = await claimOk(t, "host-1");
  await t.mutation(api.jobs.start, { token: TOKEN, jobId: cb.jobId, leaseToken: cb.leaseToken });
  await claimOk(t, "host-1"); // `last`, at its only attempt
  await claimOk(t, "host-2");
  expect([ca.jobId, cb.jobId]).toEqual([a, b]);
  await t.mutation(api.jobs.cancel, { jobId: b, token: OPERATOR });

  const reply = await t.mutation(api.jobs.recoverWorker, { token: TOKEN, workerId: "host-1" });
  expect(reply).toEqual({ moved: 1, dead: 1, canceled: 1 });
  const ja = await getJob(t, a);
  expect(ja.status).toBe("pending");
  expect(ja.attempts).toBe(1); // a lease lost to a crash keeps its attempt consumed
  expect(ja.runAt).toBeLessThanOrEqual(Date.now() + 50); // ready now (convex-test time creeps)
  expect(ja.lastErrorKind).toBe("lease_expired");
  expect((await getJob(t, b)).status).toBe("canceled");
  expect((await getJob(t, last)).status).toBe("dead");
  expect((await getJob(t, other)).status).toBe("claimed"); // another worker's: untouched
  // the predecessor's lease is gone for good
  await expect(
    t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId: a, leaseToken: ca.leaseToken, leaseMs: 60_000 }),
  ).rejects.toThrow();
  // nothing left to give back; the job is claimable again right away
  expect(await t.mutation(api.jobs.recoverWorker, { token: TOKEN, workerId: "host-1" })).toEqual({
    moved: 0, dead: 0, canceled: 0,
  });
  expect((await claimOk(t, "host-1")).jobId).toBe(a);
  await expectAggregatesExact(t);
});
