// The dispatcher (dispatch.ts) and worker slots (lib/slots.ts): each due job is handed to
// exactly one idle slot, the longest idle first; a worker learns of it from its own
// subscription (jobs:assignments) and accepts it with claimOne, reading only its own rows.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { assignments as assignmentsFn, claimOne as claimOneFn } from "../../convex/jobs";
import {
  BACKOFF_BASE_MS,
  DISPATCH_STARVE_AFTER_TICKS,
  MIN_ACCEPT_MS,
} from "../../convex/lib/policy";
import {
  OPERATOR,
  TOKEN,
  advance,
  claimOk,
  dispatch,
  enqueue,
  expectAggregatesExact,
  expectCode,
  getJob,
  makeT,
  newRequestId,
  rawJob,
  setupEnv,
  teardownEnv,
  type T,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const LEASE = 60_000;

function offer(t: T, workerId: string, slots = [0], acceptMs = 30_000) {
  return t.mutation(api.jobs.claimOne, {
    token: TOKEN, workerId, leaseMs: LEASE, requestId: newRequestId(), slots, acceptMs, start: true,
  });
}
const accept = offer;

function assignments(t: T, workerId: string) {
  return t.query(api.jobs.assignments, { token: TOKEN, workerId });
}

async function mode(t: T) {
  return await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())?.mode ?? null);
}

/** Run dispatcher ticks as the scheduler would, until the chain stops (bounded). */
async function runTicks(t: T, max = 20) {
  const results = [];
  for (let i = 0; i < max; i++) {
    const m = await mode(t);
    if (m !== "active") break;
    results.push(await dispatch(t));
  }
  return results;
}

describe("assignment", () => {
  test("an idle slot gets the due job; its worker sees it and accepts it", async () => {
    const t = makeT();
    expect(await offer(t, "w1")).toBeNull();
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "idle" }] });
    const jobId = await enqueue(t, { githubToken: "ghp_notForTheSubscription0123" });
    expect(await mode(t)).toBe("active"); // the enqueue kicked the dispatcher
    const tick = await dispatch(t);
    expect(tick).toMatchObject({ stale: false, assigned: 1, next: "idle" });
    const job = await rawJob(t, jobId);
    expect(job).toMatchObject({ status: "assigned", lockedBy: "w1", assignedSlot: 0, attempts: 0 });
    const seen = await assignments(t, "w1");
    expect(seen).toEqual({ slots: [{ slot: 0, state: "assigned", jobId }] });
    expect(JSON.stringify(seen)).not.toContain("ghp_");
    const c = await accept(t, "w1");
    expect(c).toMatchObject({ jobId, attempt: 1, githubToken: "ghp_notForTheSubscription0123" });
    expect(await getJob(t, jobId)).toMatchObject({ status: "running", attempts: 1, lockedBy: "w1" });
    // The accept wrote the job only: the slot's row still names it (no re-run of the
    // worker's subscription), until the job's final call offers the slot again.
    expect(await assignments(t, "w1")).toEqual(seen);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId, leaseToken: c!.leaseToken, runId: "r",
      summary: { docsCount: 0, durationMs: 1 }, offer: { slot: 0, acceptMs: 30_000 },
    });
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "idle" }] });
    await expectAggregatesExact(t);
  });

  test("longest idle first; one job per slot, never two slots per job", async () => {
    const t = makeT();
    for (const w of ["w1", "w2", "w3"]) {
      await offer(t, w);
      advance(10);
    }
    const jobs = [await enqueue(t), await enqueue(t)];
    await runTicks(t);
    const held = await Promise.all(["w1", "w2", "w3"].map((w) => assignments(t, w)));
    expect(held.map((h) => h.slots[0].state)).toEqual(["assigned", "assigned", "idle"]);
    expect(held.map((h) => h.slots[0].jobId ?? null)).toEqual([jobs[0], jobs[1], null]);
    // each accepts its own; the third has nothing to accept
    expect((await accept(t, "w1"))!.jobId).toBe(jobs[0]);
    expect((await accept(t, "w2"))!.jobId).toBe(jobs[1]);
    expect(await accept(t, "w3")).toBeNull();
    await expectAggregatesExact(t);
  });

  test("several slots of one worker are dispatched and accepted one by one", async () => {
    const t = makeT();
    await offer(t, "w1", [0, 1, 2]);
    const jobs = [await enqueue(t), await enqueue(t)];
    await runTicks(t);
    const seen = await assignments(t, "w1");
    expect(seen.slots.filter((s) => s.state === "assigned").map((s) => s.jobId).sort()).toEqual([...jobs].sort());
    const first = await accept(t, "w1", [0, 1, 2]);
    const second = await accept(t, "w1", [1, 2]);
    expect(new Set([first!.jobId, second!.jobId])).toEqual(new Set(jobs));
    expect(await accept(t, "w1", [2])).toBeNull();
  });

  test("a claim reads only its worker's rows and its job: the same few documents however long the queue", async () => {
    type Registered = { _handler: (ctx: unknown, args: unknown) => Promise<unknown> };
    const t = makeT({ documentsRead: 500 });
    for (let i = 0; i < 300; i++) await enqueue(t);
    for (let i = 0; i < 20; i++) await offer(t, `other-${i}`);
    await offer(t, "w1");
    await dispatch(t);
    const args = { token: TOKEN, workerId: "w1", leaseMs: LEASE, requestId: "measured", slots: [0], start: true };
    const reads = await t.mutation(async (ctx) => {
      const c = await (claimOneFn as unknown as Registered)._handler(ctx, args);
      expect(c).not.toBeNull();
      return (await ctx.meta.getTransactionMetrics()).documentsRead.used;
    });
    expect(reads).toBeLessThanOrEqual(4); // request id lookup, its slot row, its job (+ a secret row)
    const subscriptionReads = await t.query(async (ctx) => {
      await (assignmentsFn as unknown as Registered)._handler(ctx, { token: TOKEN, workerId: "other-3" });
      return (await ctx.meta.getTransactionMetrics()).documentsRead.used;
    });
    expect(subscriptionReads).toBe(1);
  });

  test("only the worker token may subscribe, offer or withdraw", async () => {
    const t = makeT();
    for (const token of [OPERATOR, "nope", undefined]) {
      await expectCode(t.query(api.jobs.assignments, { token, workerId: "w1" }), "UNAUTHORIZED");
      await expectCode(t.mutation(api.jobs.withdraw, { token, workerId: "w1" }), "UNAUTHORIZED");
    }
  });

  test("slots and acceptMs are validated", async () => {
    const t = makeT();
    for (const slots of [[], [-1], [32], [0, 0], [1.5]]) {
      await expectCode(offer(t, "w1", slots), "INVALID_ARGUMENT");
    }
    for (const acceptMs of [0, MIN_ACCEPT_MS - 1, 11 * 60_000, Number.NaN]) {
      await expectCode(offer(t, "w1", [0], acceptMs), "INVALID_ARGUMENT");
    }
  });
});

describe("what goes back, and when", () => {
  test("an assignment not accepted in time goes back unspent, and its slot is dropped", async () => {
    const t = makeT();
    await offer(t, "gone", [0], MIN_ACCEPT_MS);
    const jobId = await enqueue(t, { maxAttempts: 1 });
    await dispatch(t);
    expect((await rawJob(t, jobId))!.status).toBe("assigned");
    advance(MIN_ACCEPT_MS + 100);
    await offer(t, "alive");
    // the upkeep tick (the cron's, or any chain's) takes it back and hands it on
    await t.mutation(internal.dispatch.maintain, {});
    await runTicks(t);
    const job = await rawJob(t, jobId);
    expect(job).toMatchObject({ status: "assigned", lockedBy: "alive", attempts: 0 });
    expect(job!.releaseReason).toMatch(/not accepted in time \(worker gone\)/);
    expect(await assignments(t, "gone")).toEqual({ slots: [] });
    // the late worker finds nothing to accept; its one attempt is still there for "alive"
    expect(await accept(t, "gone")).toBeNull();
    const c = await accept(t, "alive");
    expect(c).toMatchObject({ jobId, attempt: 1, maxAttempts: 1 });
    await expectAggregatesExact(t);
  });

  test("withdraw takes the slots out and returns what was assigned, unspent", async () => {
    const t = makeT();
    await offer(t, "w1", [0, 1]);
    const jobId = await enqueue(t);
    await dispatch(t);
    const r = await t.mutation(api.jobs.withdraw, { token: TOKEN, workerId: "w1", reason: "draining" });
    expect(r).toEqual({ withdrawn: 2, returned: 1 });
    expect(await getJob(t, jobId)).toMatchObject({ status: "pending", attempts: 0 });
    expect(await assignments(t, "w1")).toEqual({ slots: [] });
    expect((await rawJob(t, jobId))!.releaseReason).toBe("draining");
    await expectAggregatesExact(t);
  });

  test("a cancel of an assigned job is immediate; the worker's slot is idle again", async () => {
    const t = makeT();
    await offer(t, "w1");
    const jobId = await enqueue(t);
    await dispatch(t);
    expect((await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR })).status).toBe("canceled");
    expect(await accept(t, "w1")).toBeNull();
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "idle" }] });
    await expectAggregatesExact(t);
  });

  test("recoverWorker gives back a predecessor's slots and assignments too", async () => {
    const t = makeT();
    await offer(t, "host-1", [0, 1]);
    const jobId = await enqueue(t);
    await dispatch(t);
    const r = await t.mutation(api.jobs.recoverWorker, { token: TOKEN, workerId: "host-1" });
    expect(r).toEqual({ moved: 1, dead: 0, canceled: 0 });
    expect(await getJob(t, jobId)).toMatchObject({ status: "pending", attempts: 0 });
    expect(await assignments(t, "host-1")).toEqual({ slots: [] });
  });
});

describe("the final call offers the freed slot", () => {
  test("complete with an offer: the slot is idle again in the same call and gets the next job", async () => {
    const t = makeT();
    const first = await enqueue(t);
    const second = await enqueue(t);
    const c = await claimOk(t, "w1");
    expect(c.jobId).toBe(first);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, runId: "r",
      summary: { docsCount: 0, durationMs: 1 }, offer: { slot: 0, acceptMs: 30_000 },
    });
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "idle" }] });
    await dispatch(t);
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "assigned", jobId: second }] });
    // retried after a lost reply: answered as applied, the offer changes nothing more
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, runId: "r",
      summary: { docsCount: 0, durationMs: 1 }, offer: { slot: 0, acceptMs: 30_000 },
    });
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "assigned", jobId: second }] });
  });

  test("retryOrFail and acknowledgeCancel offer it too", async () => {
    const t = makeT();
    await enqueue(t);
    await enqueue(t);
    const a = await claimOk(t, "w1");
    await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId: a.jobId, leaseToken: a.leaseToken, error: "x", errorKind: "transient",
      offer: { slot: 0, acceptMs: 30_000 },
    });
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "idle" }] });
    const b = await claimOk(t, "w1"); // its idle slot takes the other job
    await t.mutation(api.jobs.cancel, { jobId: b.jobId, token: OPERATOR });
    await t.mutation(api.jobs.acknowledgeCancel, {
      token: TOKEN, jobId: b.jobId, leaseToken: b.leaseToken, offer: { slot: 0, acceptMs: 45_000 },
    });
    expect(await assignments(t, "w1")).toEqual({ slots: [{ slot: 0, state: "idle" }] });
  });
});

describe("the dispatcher's modes", () => {
  test("idle -> active on an enqueue -> idle once nothing is due; sleeping until a retry is due", async () => {
    const t = makeT();
    expect(await mode(t)).toBeNull();
    await enqueue(t);
    expect(await mode(t)).toBe("active");
    const c = await claimOk(t, "w1");
    await runTicks(t);
    expect(await mode(t)).toBe("idle");
    const r = await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, error: "x", errorKind: "transient",
    });
    const state = await t.run(async (ctx) => await ctx.db.query("dispatcher").first());
    expect(state).toMatchObject({ mode: "sleeping", wakeAt: r.runAt });
    expect(r.runAt! - Date.now()).toBeGreaterThanOrEqual(BACKOFF_BASE_MS / 2 - 10);
  });

  test("due jobs and no free slot: a few back-off ticks, then starved (no calls) until a slot is offered", async () => {
    const t = makeT();
    await enqueue(t);
    const ticks = [];
    for (let i = 0; i <= DISPATCH_STARVE_AFTER_TICKS + 1 && (await mode(t)) === "active"; i++) {
      const state = await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())!);
      ticks.push(await t.mutation(internal.dispatch.tick, { epoch: state.epoch, idleTicks: i }));
    }
    expect(ticks.map((r) => r.next)).toEqual([...Array(DISPATCH_STARVE_AFTER_TICKS).fill("backlog"), "starved"]);
    expect(await mode(t)).toBe("starved");
    // another enqueue does not wake it: no slot could take the job
    await enqueue(t);
    expect(await mode(t)).toBe("starved");
    // a worker's offer does
    await offer(t, "w1");
    expect(await mode(t)).toBe("active");
    await runTicks(t);
    expect((await assignments(t, "w1")).slots[0].state).toBe("assigned");
  });

  test("a chain that handed out several jobs lingers before it parks; a single job's does not", async () => {
    const t = makeT();
    for (const w of ["w1", "w2"]) await offer(t, w);
    await enqueue(t);
    await enqueue(t);
    const state = await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())!);
    const first = await t.mutation(internal.dispatch.tick, { epoch: state.epoch, idleTicks: 0 });
    expect(first).toMatchObject({ assigned: 2, next: "linger" });
    // a job arriving meanwhile finds it running: the enqueue wrote nothing of the dispatcher's
    await offer(t, "w3");
    await enqueue(t);
    expect(await mode(t)).toBe("active");
    const lingering = [];
    for (let i = 1; i <= 4; i++) {
      lingering.push(
        await t.mutation(internal.dispatch.tick, { epoch: state.epoch, idleTicks: i - 1, assigned: 2 }),
      );
    }
    expect(lingering.map((r) => r.next)).toEqual(["linger", "linger", "linger", "idle"]);
    expect(lingering[0].assigned).toBe(1); // the job that came in meanwhile
    expect(await mode(t)).toBe("idle");
  });

  test("a tick of an older epoch stops at once", async () => {
    const t = makeT();
    await enqueue(t);
    const state = await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())!);
    const r = await t.mutation(internal.dispatch.tick, { epoch: state.epoch - 1, idleTicks: 0 });
    expect(r).toMatchObject({ stale: true, assigned: 0 });
  });

  test("the scheduled chain drains a burst onto the slots by itself", async () => {
    const t = makeT();
    for (let i = 0; i < 5; i++) await offer(t, `w${i}`, [0, 1]);
    for (let i = 0; i < 8; i++) await enqueue(t);
    await t.finishAllScheduledFunctions(() => vi.runAllTimers());
    const held = (await Promise.all([0, 1, 2, 3, 4].map((i) => assignments(t, `w${i}`)))).flatMap((a) => a.slots);
    const jobIds = held.filter((s) => s.state === "assigned").map((s) => s.jobId);
    expect(jobIds).toHaveLength(8);
    expect(new Set(jobIds).size).toBe(8);
    expect(await mode(t)).toBe("idle");
    await expectAggregatesExact(t);
  });
});
