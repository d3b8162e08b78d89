// Jobs targeted at one worker (targetWorkerId, operator only): the dispatcher hands the
// rollout's smoke job to its canary's slots and to no other worker's, and it never holds up
// the other workers' jobs nor keeps the dispatcher ticking while it waits for its worker.
import { afterEach, beforeEach, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import { DISPATCH_BATCH } from "../../convex/lib/policy";
import {
  OPERATOR, REPO, TOKEN, advance, claim, claimOk, dispatch, enqueue, expectAggregatesExact, expectCode, getJob,
  makeT, newRequestId, rawJob, setupEnv, teardownEnv, type T,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const LEASE = 60_000;

async function enqueueFor(t: T, targetWorkerId: string, maxAttempts = 1) {
  const r = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, targetWorkerId, maxAttempts, userId: "rollout-smoke" });
  return r.jobId;
}

/** claimOne as the worker calls it: accept what one of `slots` was assigned, else offer them. */
function offer(t: T, workerId: string, slots = [0]) {
  return t.mutation(api.jobs.claimOne, {
    token: TOKEN, workerId, leaseMs: LEASE, requestId: newRequestId(), slots, acceptMs: 30_000, start: true,
  });
}
const accept = offer;

async function held(t: T, workerId: string) {
  const seen = await t.query(api.jobs.assignments, { token: TOKEN, workerId });
  return seen.slots.map((s) => s.jobId ?? null);
}

async function mode(t: T) {
  return await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())?.mode ?? null);
}

/** Dispatcher ticks as the scheduler would run them, until the chain stops (bounded). */
async function runTicks(t: T, max = 20) {
  const results = [];
  for (let i = 0; i < max && (await mode(t)) === "active"; i++) results.push(await dispatch(t));
  return results;
}

test("the dispatcher gives a targeted job to its worker's slot only, ahead of older untargeted ones", async () => {
  const t = makeT();
  await offer(t, "other-1"); // idle longest
  advance(10);
  await offer(t, "canary-1");
  const older = await enqueue(t);
  advance(1_000);
  const smoke = await enqueueFor(t, "canary-1");
  await runTicks(t);
  expect(await held(t, "other-1")).toEqual([older]);
  expect(await held(t, "canary-1")).toEqual([smoke]);
  expect(await rawJob(t, smoke)).toMatchObject({ status: "assigned", lockedBy: "canary-1", targetWorkerId: "canary-1" });
  expect((await accept(t, "canary-1"))!.jobId).toBe(smoke);
  expect((await accept(t, "other-1"))!.jobId).toBe(older);
  await expectAggregatesExact(t);
});

test("other workers' idle slots never get it; the dispatcher parks instead of ticking for it", async () => {
  const t = makeT();
  await offer(t, "other-1");
  await offer(t, "other-2");
  const smoke = await enqueueFor(t, "canary-1");
  const ticks = await runTicks(t);
  expect(ticks.map((r) => r!.next)).toEqual(["idle"]); // no back-off loop: no slot of its worker is idle
  expect(await held(t, "other-1")).toEqual([null]);
  expect(await held(t, "other-2")).toEqual([null]);
  expect((await rawJob(t, smoke))!.status).toBe("pending");
  expect(await accept(t, "other-1")).toBeNull();
  // its worker's first offered slot wakes the dispatcher, which hands it over
  await offer(t, "canary-1");
  expect(await mode(t)).toBe("active");
  await runTicks(t);
  expect(await held(t, "canary-1")).toEqual([smoke]);
  expect((await accept(t, "canary-1"))!.jobId).toBe(smoke);
});

test("a targeted job at the head of the queue does not hold the others back", async () => {
  const t = makeT();
  await enqueueFor(t, "canary-1");
  advance(1_000);
  const later = await enqueue(t);
  advance(1_000);
  expect((await claimOk(t, "other-1")).jobId).toBe(later);
});

test("its worker busy: the job waits for that worker's freed slot, not for anyone else's", async () => {
  const t = makeT();
  const first = await enqueue(t);
  const c = await claimOk(t, "canary-1"); // the canary runs an ordinary job
  expect(c.jobId).toBe(first);
  await offer(t, "other-1");
  const smoke = await enqueueFor(t, "canary-1");
  await runTicks(t);
  expect(await mode(t)).toBe("idle");
  expect(await held(t, "other-1")).toEqual([null]);
  // the canary's final call offers its slot: the dispatcher wakes and hands it the smoke job
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, runId: "r",
    summary: { docsCount: 0, durationMs: 1 }, offer: { slot: 0, acceptMs: 30_000 },
  });
  expect(await mode(t)).toBe("active");
  await runTicks(t);
  expect(await held(t, "canary-1")).toEqual([smoke]);
  expect(await held(t, "other-1")).toEqual([null]);
  await expectAggregatesExact(t);
});

test("found beyond the first batch of idle slots: the worker's own slots are looked up", async () => {
  const t = makeT();
  for (let i = 0; i <= DISPATCH_BATCH; i++) await offer(t, `other-${i}`);
  advance(10);
  await offer(t, "canary-1"); // idle for the shortest time: not in the first batch
  const smoke = await enqueueFor(t, "canary-1");
  await runTicks(t);
  expect(await held(t, "canary-1")).toEqual([smoke]);
});

test("an expired lease of a targeted job goes back to its worker, not to another", async () => {
  const t = makeT();
  const smoke = await enqueueFor(t, "canary-1", 3);
  await claimOk(t, "canary-1", 10_000);
  advance(20_000);
  expect(await claim(t, "other-1")).toBeNull();
  expect((await getJob(t, smoke)).status).toBe("pending");
  expect((await claimOk(t, "canary-1")).jobId).toBe(smoke);
  await expectAggregatesExact(t);
});

test("with one attempt, an expired targeted job is dead (the rollout sees it fail)", async () => {
  const t = makeT();
  const smoke = await enqueueFor(t, "canary-1");
  await claimOk(t, "canary-1", 10_000);
  advance(20_000);
  expect(await claim(t, "other-1")).toBeNull();
  expect((await getJob(t, smoke)).status).toBe("dead");
});

test("a targeted job that failed and retries later comes back to its worker only", async () => {
  const t = makeT();
  const smoke = await enqueueFor(t, "canary-1", 3);
  const c = await claimOk(t, "canary-1");
  const r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, error: "flaky", errorKind: "transient",
  });
  expect((await getJob(t, smoke)).status).toBe("failed");
  // the dispatcher sleeps until the retry is due (a targeted job's runAt counts too)
  expect(await t.run(async (ctx) => await ctx.db.query("dispatcher").first())).toMatchObject({
    mode: "sleeping", wakeAt: r.runAt,
  });
  expect(await claim(t, "canary-1")).toBeNull(); // its back-off has not passed
  advance(30_000);
  expect(await claim(t, "other-1")).toBeNull();
  expect((await claimOk(t, "canary-1")).jobId).toBe(smoke);
});

test("claimOne never starts another worker's targeted job, whatever a slot row says", async () => {
  const t = makeT();
  await offer(t, "other-1");
  const smoke = await enqueueFor(t, "canary-1");
  // A pairing the dispatcher never makes, written by hand.
  await t.run(async (ctx) => {
    const job = (await ctx.db.normalizeId("jobs", smoke))!;
    const row = (await ctx.db.query("workerSlots").first())!;
    await ctx.db.patch(job, { status: "assigned", lockedBy: "other-1", assignedSlot: 0, leaseUntil: Date.now() + 30_000 });
    await ctx.db.patch(row._id, { state: "assigned", jobId: job, since: Date.now() });
  });
  expect(await accept(t, "other-1")).toBeNull();
  const job = (await rawJob(t, smoke))!;
  expect(job).toMatchObject({ status: "pending", attempts: 0 });
  expect(job.lockedBy).toBeUndefined();
  expect(await held(t, "other-1")).toEqual([null]);
});

test("targetWorkerId is an operator's: a signed-in user cannot target a worker", async () => {
  const t = makeT();
  await expectCode(
    t.withIdentity({ subject: "alice" }).mutation(api.jobs.enqueue, { repoUrl: REPO, targetWorkerId: "canary-1" }),
    "UNAUTHORIZED",
  );
  await expectCode(
    t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: TOKEN, targetWorkerId: "canary-1" }),
    "UNAUTHORIZED",
  );
  await expectCode(
    t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, targetWorkerId: "bad id with spaces" }),
    "INVALID_ARGUMENT",
  );
  const plain = await t.withIdentity({ subject: "alice" }).mutation(api.jobs.enqueue, { repoUrl: REPO });
  expect((await rawJob(t, plain.jobId))!.targetWorkerId).toBeUndefined();
});
