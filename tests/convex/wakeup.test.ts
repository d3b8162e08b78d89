// jobs:wakeup: the workers' subscription. It names the earliest due time of a queued job,
// reads a bounded amount, and its answer moves only when that time does.
import { afterEach, beforeEach, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import { wakeup as wakeupFn } from "../../convex/jobs";
import { OPERATOR, TOKEN, advance, claimOk, enqueue, expectCode, makeT, setupEnv, teardownEnv, type T } from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const wakeup = (t: T) => t.query(api.jobs.wakeup, { token: TOKEN });

test("an empty queue answers null; an enqueue answers its runAt at once", async () => {
  const t = makeT();
  expect(await wakeup(t)).toEqual({ nextRunAt: null });
  const at = Date.now();
  await enqueue(t);
  const { nextRunAt } = await wakeup(t);
  expect(nextRunAt).not.toBeNull();
  expect(nextRunAt!).toBeGreaterThanOrEqual(at);
  expect(nextRunAt!).toBeLessThanOrEqual(Date.now());
});

test("the earliest of pending and failed; a claim moves it to the next job", async () => {
  const t = makeT();
  const first = await enqueue(t);
  advance(1000);
  await enqueue(t);
  const before = await wakeup(t);
  const c = await claimOk(t);
  expect(c.jobId).toBe(first);
  const after = await wakeup(t);
  expect(after.nextRunAt!).toBeGreaterThan(before.nextRunAt!);
  // The second job's claim empties the queue.
  await claimOk(t, "w2");
  expect(await wakeup(t)).toEqual({ nextRunAt: null });
  // A failed attempt comes back as a failed job due later: a timer for the worker.
  const r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN,
    jobId: c.jobId,
    leaseToken: c.leaseToken,
    error: "boom",
    errorKind: "transient",
  });
  expect(r.status).toBe("failed");
  expect(await wakeup(t)).toEqual({ nextRunAt: r.runAt });
  expect(r.runAt!).toBeGreaterThan(Date.now());
});

test("heartbeats and progress do not change the answer", async () => {
  const t = makeT();
  const held = await enqueue(t);
  advance(10);
  await enqueue(t);
  const c = await claimOk(t);
  expect(c.jobId).toBe(held);
  const before = await wakeup(t);
  for (let i = 0; i < 3; i++) {
    advance(1000);
    await t.mutation(api.jobs.heartbeat, {
      token: TOKEN,
      jobId: c.jobId,
      leaseToken: c.leaseToken,
      leaseMs: 60_000,
      progress: { step: "analyze", currentStep: i, totalSteps: 5 },
    });
    expect(await wakeup(t)).toEqual(before);
  }
});

test("a cancel of the only queued job empties the answer", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
  expect(await wakeup(t)).toEqual({ nextRunAt: null });
});

test("reads a bounded amount: two documents however long the queue", async () => {
  type Registered = { _handler: (ctx: unknown, args: unknown) => Promise<{ nextRunAt: number | null }> };
  const t = makeT({ documentsRead: 200 });
  for (let i = 0; i < 60; i++) await enqueue(t);
  for (let i = 0; i < 10; i++) await claimOk(t);
  const { answer, reads } = await t.query(async (ctx) => {
    const answer = await (wakeupFn as unknown as Registered)._handler(ctx, { token: TOKEN });
    return { answer, reads: (await ctx.meta.getTransactionMetrics()).documentsRead.used };
  });
  expect(answer.nextRunAt).not.toBeNull();
  expect(reads).toBeLessThanOrEqual(2);
});

test("only the worker token may subscribe", async () => {
  const t = makeT();
  await expectCode(t.query(api.jobs.wakeup, { token: "wrong" }), "UNAUTHORIZED");
  await expectCode(t.query(api.jobs.wakeup, { token: OPERATOR }), "UNAUTHORIZED");
  await expectCode(t.query(api.jobs.wakeup, {}), "UNAUTHORIZED");
});
