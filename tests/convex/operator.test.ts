// Operator functions of the stuck-jobs runbook: listStuck, reclaimNow, requeue.
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { MAX_REQUEUE_RECORDS, listStuck } from "../../convex/operator";
import { RECLAIM_BATCH } from "../../convex/lib/policy";
import {
  OPERATOR,
  REPO,
  T0,
  TOKEN,
  advance,
  claimOk,
  enqueue,
  expectAggregatesExact,
  expectCode,
  getJob,
  makeT,
  rawJob,
  setupEnv,
  teardownEnv,
  type T,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

async function started(t: T, workerId: string, leaseMs: number) {
  const c = await claimOk(t, workerId, leaseMs);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken });
  return c;
}

/** A job that ended dead with a permanent error after one attempt. */
async function deadJob(t: T, extra: Parameters<typeof enqueue>[1] = {}) {
  const jobId = await enqueue(t, extra);
  const c = await claimOk(t, "w", MINUTE);
  expect(c.jobId).toBe(jobId);
  await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN,
    jobId,
    leaseToken: c.leaseToken,
    error: "fatal: repository gone",
    errorKind: "repository_not_found",
  });
  expect((await getJob(t, jobId)).status).toBe("dead");
  return jobId;
}

describe("the operator token guards every operator function", () => {
  test("missing, wrong or worker token: UNAUTHORIZED", async () => {
    const t = makeT();
    const jobId = await deadJob(t);
    for (const token of [undefined, "wrong-token", TOKEN]) {
      await expectCode(t.query(api.operator.listStuck, { token }), "UNAUTHORIZED");
      await expectCode(t.mutation(api.operator.reclaimNow, { token }), "UNAUTHORIZED");
      await expectCode(t.mutation(api.operator.requeue, { token, jobId }), "UNAUTHORIZED");
    }
    // a signed-in web user is not an operator
    const alice = t.withIdentity({ subject: "alice" });
    await expectCode(alice.query(api.operator.listStuck, {}), "UNAUTHORIZED");
    expect((await getJob(t, jobId)).status).toBe("dead");
  });
});

describe("listStuck", () => {
  test("expired leases and long-running jobs, oldest first, with the reason and no secrets", async () => {
    const t = makeT();
    const dead = await deadJob(t);
    // A claim runs a dispatcher tick, which reclaims expired leases: the long runner first,
    // the others queued and claimed only once it has run for hours.
    const longRunning = await enqueue(t);
    const c3 = await started(t, "w-c", HOUR); // alive (heartbeating), running for hours
    expect(c3.jobId).toBe(longRunning);
    // A lease is at most an hour (the worker's LEASE_MS bound): c3 heartbeats to stay alive.
    for (let i = 0; i < 2; i++) {
      advance(HOUR - MINUTE);
      await t.mutation(api.jobs.heartbeat, {
        token: TOKEN,
        jobId: c3.jobId,
        leaseToken: c3.leaseToken,
        leaseMs: HOUR,
      });
    }
    const claimedExpired = await enqueue(t, { githubToken: "ghp_secretvalue0123456789", branch: "dev" });
    const runningExpired = await enqueue(t);
    const fresh = await enqueue(t);
    const c1 = await claimOk(t, "w-a", 10_000); // never started, lease runs out
    const c2 = await started(t, "w-b", 20_000); // started, then its worker vanished
    const c4 = await started(t, "w-d", HOUR); // alive and recent
    expect([c1.jobId, c2.jobId, c4.jobId]).toEqual([claimedExpired, runningExpired, fresh]);
    const pending = await enqueue(t);
    advance(MINUTE);

    const onlyExpired = await t.query(api.operator.listStuck, { token: OPERATOR });
    expect(onlyExpired.map((j) => [j.jobId, j.why])).toEqual([
      [claimedExpired, "lease_expired"],
      [runningExpired, "lease_expired"],
    ]);
    const all = await t.query(api.operator.listStuck, { token: OPERATOR, runningLongerThanMs: HOUR });
    // oldest first: the long runner started (T0) before the leases expired (2 h later)
    expect(all.map((j) => [j.jobId, j.why])).toEqual([
      [longRunning, "running_too_long"],
      [claimedExpired, "lease_expired"],
      [runningExpired, "lease_expired"],
    ]);
    const raw1 = (await rawJob(t, claimedExpired))!;
    const raw3 = (await rawJob(t, longRunning))!;
    expect(all[1]).toEqual({
      jobId: claimedExpired,
      status: "claimed",
      why: "lease_expired",
      attempts: 1,
      maxAttempts: 3,
      workerId: "w-a",
      leaseExpiresAt: raw1.leaseUntil,
      startedAt: null,
      repoUrl: REPO,
      branch: "dev",
      cancelRequested: false,
    });
    expect(all[0]).toMatchObject({
      status: "running",
      workerId: "w-c",
      startedAt: raw3.startedAt,
      leaseExpiresAt: raw3.leaseUntil,
      branch: null,
    });
    const text = JSON.stringify(all);
    expect(text).not.toContain("ghp_secretvalue");
    expect(text).not.toContain(c1.leaseToken);
    expect(text).not.toMatch(/leaseToken|githubToken|claimRequestId/);
    for (const id of [fresh, pending, dead]) expect(all.map((j) => j.jobId)).not.toContain(id);
    // a threshold longer than anything has run: only the expired leases
    const none = await t.query(api.operator.listStuck, { token: OPERATOR, runningLongerThanMs: 5 * HOUR });
    expect(none.map((j) => j.why)).toEqual(["lease_expired", "lease_expired"]);
    // listing changes nothing
    expect((await getJob(t, claimedExpired)).status).toBe("claimed");
    await expectAggregatesExact(t);
  });

  test("a job that is both expired and running too long is reported once, as lease_expired", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    await started(t, "w", 10_000);
    advance(2 * HOUR);
    const stuck = await t.query(api.operator.listStuck, { token: OPERATOR, runningLongerThanMs: HOUR });
    expect(stuck.map((j) => [j.jobId, j.why])).toEqual([[jobId, "lease_expired"]]);
  });

  test("a bad threshold is INVALID_ARGUMENT; the limit bounds the reply", async () => {
    const t = makeT();
    await expectCode(
      t.query(api.operator.listStuck, { token: OPERATOR, runningLongerThanMs: -1 }),
      "INVALID_ARGUMENT",
    );
    for (let i = 0; i < 5; i++) await enqueue(t);
    for (let i = 0; i < 5; i++) await claimOk(t, "w", 5_000);
    advance(MINUTE);
    expect(await t.query(api.operator.listStuck, { token: OPERATOR, limit: 2 })).toHaveLength(2);
    expect(await t.query(api.operator.listStuck, { token: OPERATOR, limit: 0 })).toHaveLength(1);
    expect(await t.query(api.operator.listStuck, { token: OPERATOR })).toHaveLength(5);
  });

  test("reads only the stuck jobs through indexes, whatever the table size", async () => {
    type Registered = { _handler: (ctx: unknown, args: unknown) => Promise<unknown[]> };
    const t = makeT({ documentsRead: 1_000 });
    for (let i = 0; i < 150; i++) await enqueue(t); // far more than the reads allowed below
    // Leases of an hour, the longest Convex accepts: the slow ones still hold theirs. (A
    // claim runs a dispatcher tick, which reclaims expired leases: the crashed ones last.)
    for (let i = 0; i < 6; i++) await started(t, "slow", HOUR);
    advance(45 * MINUTE);
    for (let i = 0; i < 4; i++) await started(t, "recent", HOUR);
    for (let i = 0; i < 3; i++) await claimOk(t, "crashed", 5_000);
    advance(MINUTE);
    const { stuck, reads } = await t.query(async (ctx) => {
      const stuck = await (listStuck as unknown as Registered)._handler(ctx, {
        token: OPERATOR,
        runningLongerThanMs: 30 * MINUTE,
      });
      return { stuck, reads: (await ctx.meta.getTransactionMetrics()).documentsRead.used };
    });
    expect(stuck).toHaveLength(3 + 6);
    // 9 stuck jobs: the 141 pending and 4 recent jobs are not read
    expect(reads).toBeLessThanOrEqual(9 + 4);
  });
});

describe("reclaimNow", () => {
  /** Jobs in every situation the reclaim pass distinguishes. */
  async function scenario(t: T) {
    const movable = await enqueue(t);
    const lastAttempt = await enqueue(t, { maxAttempts: 1 });
    const canceling = await enqueue(t);
    const healthy = await enqueue(t);
    const untouched = await enqueue(t);
    await started(t, "w", 10_000);
    await claimOk(t, "w", 10_000);
    await claimOk(t, "w", 10_000);
    await claimOk(t, "w", 120_000);
    await t.mutation(api.jobs.cancel, { jobId: canceling, token: OPERATOR });
    advance(20_000);
    return [movable, lastAttempt, canceling, healthy, untouched];
  }

  test("does what the cron does, now, and says what happened to each job", async () => {
    const viaCron = makeT();
    const cronIds = await scenario(viaCron);
    const cronReply = await viaCron.mutation(internal.jobs.reclaimExpired, {});

    const viaOperator = makeT();
    advance(-20_000 - 100); // the same clock for the second scenario (creep aside)
    const ids = await scenario(viaOperator);
    const reply = await viaOperator.mutation(api.operator.reclaimNow, { token: OPERATOR });

    expect(cronReply).toEqual({ moved: 1, dead: 1, canceled: 1 });
    expect({ moved: reply.moved, dead: reply.dead, canceled: reply.canceled }).toEqual(cronReply);
    expect(reply.more).toBe(false);
    expect(new Set(reply.jobs)).toEqual(
      new Set([
        { jobId: ids[0], outcome: "pending" },
        { jobId: ids[1], outcome: "dead" },
        { jobId: ids[2], outcome: "canceled" },
      ]),
    );
    const pick = (j: Awaited<ReturnType<typeof getJob>>) => ({
      status: j.status,
      attempts: j.attempts,
      lastErrorKind: j.lastErrorKind,
      lastError: j.lastError,
      lockedBy: j.lockedBy,
      leased: j.leaseUntil !== undefined,
    });
    for (let i = 0; i < ids.length; i++) {
      expect(pick(await getJob(viaOperator, ids[i]))).toEqual(pick(await getJob(viaCron, cronIds[i])));
    }
    expect((await getJob(viaOperator, ids[0])).status).toBe("pending");
    expect((await getJob(viaOperator, ids[3])).status).toBe("claimed");
    const metrics = await viaOperator.query(api.metrics.queue, { token: TOKEN });
    expect(metrics.lastHour).toMatchObject({ failed: 1, dead: 1, canceled: 1 });
    // nothing left: a second call changes nothing
    expect(await viaOperator.mutation(api.operator.reclaimNow, { token: OPERATOR })).toEqual({
      moved: 0,
      dead: 0,
      canceled: 0,
      more: false,
      jobs: [],
    });
    await expectAggregatesExact(viaOperator);
    await expectAggregatesExact(viaCron);
  });
});

test("reclaimNow is bounded like the cron and says when more remain", async () => {
  const t = makeT();
  const n = RECLAIM_BATCH + 5;
  for (let i = 0; i < n; i++) await enqueue(t);
  for (let i = 0; i < n; i++) await claimOk(t, "w", 5_000);
  advance(60_000);
  const first = await t.mutation(api.operator.reclaimNow, { token: OPERATOR });
  expect([first.moved, first.more, first.jobs.length]).toEqual([RECLAIM_BATCH, true, RECLAIM_BATCH]);
  const second = await t.mutation(api.operator.reclaimNow, { token: OPERATOR });
  expect([second.moved, second.more]).toEqual([5, false]);
  await expectAggregatesExact(t);
});

describe("requeue", () => {
  test("a dead job goes back to pending with attempts reset and its error kept for audit", async () => {
    const t = makeT();
    const jobId = await deadJob(t, { maxAttempts: 2 });
    const before = await getJob(t, jobId);
    advance(MINUTE);
    const reply = await t.mutation(api.operator.requeue, { token: OPERATOR, jobId });
    const now = Date.now();
    expect(reply).toMatchObject({
      jobId,
      status: "pending",
      attempts: 0,
      deferrals: 0,
      maxAttempts: 2,
      lastError: "fatal: repository gone",
      lastErrorKind: "repository_not_found",
      cancelRequested: false,
    });
    expect(reply.runAt).toBeGreaterThanOrEqual(T0 + MINUTE);
    expect(reply.runAt).toBeLessThanOrEqual(now);
    expect(reply.requeues).toEqual([
      {
        at: reply.runAt,
        attempts: 1,
        deferrals: 0,
        lastError: "fatal: repository gone",
        lastErrorKind: "repository_not_found",
      },
    ]);
    expect(reply.completedAt).toBeUndefined();
    expect(reply.startedAt).toBeUndefined();
    expect(reply.lockedBy).toBeUndefined();
    expect(before.completedAt).toBeDefined();
    expect(await getJob(t, jobId)).toEqual(reply);
    // counters moved in the same transaction: dead -1, pending +1, ready now
    await expectAggregatesExact(t);
    const m = await t.query(api.metrics.queue, { token: TOKEN });
    expect(m.counts).toMatchObject({ dead: 0, pending: 1 });
    expect(m.ready).toBe(1);
    expect(m.lastHour.dead).toBe(1); // history is not rewritten
    // it runs again as a first attempt
    const c = await claimOk(t, "w2");
    expect(c).toMatchObject({ jobId, attempt: 1, maxAttempts: 2 });
  });

  test("deferrals are reset too, and the audit trail keeps the newest records", async () => {
    const t = makeT();
    const jobId = await enqueue(t, { maxAttempts: 1 });
    for (let round = 0; round < MAX_REQUEUE_RECORDS + 2; round++) {
      const c = await claimOk(t, "w", MINUTE);
      expect(c.jobId).toBe(jobId);
      await t.mutation(api.jobs.retryOrFail, {
        token: TOKEN,
        jobId,
        leaseToken: c.leaseToken,
        error: `boom ${round}`,
        errorKind: "transient",
      });
      expect((await getJob(t, jobId)).status).toBe("dead");
      await t.mutation(api.operator.requeue, { token: OPERATOR, jobId });
    }
    const job = await getJob(t, jobId);
    expect(job).toMatchObject({ status: "pending", attempts: 0, deferrals: 0 });
    expect(job.requeues).toHaveLength(MAX_REQUEUE_RECORDS);
    expect(job.requeues![MAX_REQUEUE_RECORDS - 1].lastError).toBe(`boom ${MAX_REQUEUE_RECORDS + 1}`);
    expect(job.requeues![0].lastError).toBe("boom 2");
    await expectAggregatesExact(t);
  });

  test("a job that is not dead is refused with INVALID_STATE and left alone", async () => {
    const t = makeT();
    const pending = await enqueue(t);
    const running = await enqueue(t);
    const completed = await enqueue(t);
    const canceled = await enqueue(t);
    await t.mutation(api.jobs.cancel, { jobId: canceled, token: OPERATOR });
    await claimOk(t, "w"); // pending -> claimed
    const r = await started(t, "w", MINUTE);
    expect(r.jobId).toBe(running);
    const c = await claimOk(t, "w");
    expect(c.jobId).toBe(completed);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId: completed, leaseToken: c.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
    });
    const failed = await enqueue(t);
    const f = await claimOk(t, "w");
    await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId: failed, leaseToken: f.leaseToken, error: "flaky", errorKind: "transient",
    });
    const expected = { [pending]: "claimed", [running]: "running", [completed]: "completed", [canceled]: "canceled", [failed]: "failed" };
    for (const [jobId, status] of Object.entries(expected)) {
      expect((await getJob(t, jobId)).status).toBe(status);
      await expectCode(t.mutation(api.operator.requeue, { token: OPERATOR, jobId }), "INVALID_STATE");
      expect((await getJob(t, jobId)).status).toBe(status);
    }
    await expectAggregatesExact(t);
  });

  test("an unknown or malformed id is NOT_FOUND", async () => {
    const t = makeT();
    const jobId = await deadJob(t);
    await t.run(async (ctx) => {
      const id = ctx.db.normalizeId("jobs", jobId)!;
      await ctx.db.delete(id);
    });
    await expectCode(t.mutation(api.operator.requeue, { token: OPERATOR, jobId }), "NOT_FOUND");
    await expectCode(t.mutation(api.operator.requeue, { token: OPERATOR, jobId: "nope" }), "NOT_FOUND");
  });

  test("respects the dedupe key: refused while another job with that key is active", async () => {
    const t = makeT();
    const dead = await deadJob(t, { dedupeKey: "acme-widgets", userId: "alice" });
    // the dead job is not active, so a new one with the same key was created
    const active = await t.mutation(api.jobs.enqueue, {
      repoUrl: REPO, token: OPERATOR, dedupeKey: "acme-widgets", userId: "alice",
    });
    expect(active.created).toBe(true);
    // another user's key does not collide
    await enqueue(t, { dedupeKey: "acme-widgets", userId: "bob" });
    let caught: unknown;
    try {
      await t.mutation(api.operator.requeue, { token: OPERATOR, jobId: dead });
    } catch (e) {
      caught = e;
    }
    expect(String((caught as { data?: { message?: string } }).data?.message)).toContain(active.jobId);
    await expectCode(t.mutation(api.operator.requeue, { token: OPERATOR, jobId: dead }), "INVALID_STATE");
    expect((await getJob(t, dead)).status).toBe("dead");
    // once the other one ended, the dead job may come back, and the key finds it
    await t.mutation(api.jobs.cancel, { jobId: active.jobId, token: OPERATOR });
    expect((await t.mutation(api.operator.requeue, { token: OPERATOR, jobId: dead })).status).toBe("pending");
    const again = await t.mutation(api.jobs.enqueue, {
      repoUrl: REPO, token: OPERATOR, dedupeKey: "acme-widgets", userId: "alice",
    });
    expect(again).toEqual({ jobId: dead, created: false });
    await expectAggregatesExact(t);
  });
});
