// Every transition of the state machine (docs/ARCHITECTURE.md, "Job state machine").
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { BACKOFF_BASE_MS } from "../../convex/lib/policy";
import {
  OPERATOR,
  TOKEN,
  advance,
  claim,
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

async function runningJob(t: T, extra: Parameters<typeof enqueue>[1] = {}) {
  const jobId = await enqueue(t, extra);
  const c = await claimOk(t);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
  return { jobId, leaseToken: c.leaseToken, claim: c };
}

test("[*] -> pending: enqueue", async () => {
  const t = makeT();
  const now = Date.now();
  const jobId = await enqueue(t, { branch: "main" });
  const job = await getJob(t, jobId);
  expect(job).toMatchObject({
    status: "pending",
    attempts: 0,
    maxAttempts: 3,
    deferrals: 0,
    branch: "main",
    userId: "operator",
    repoUrl: "https://github.com/acme/widgets",
    cancelRequested: false,
  });
  expect(job.runAt).toBeGreaterThanOrEqual(now);
  expect(job.createdAt).toBe(job.runAt);
  const noBranch = await getJob(t, await enqueue(t));
  expect(noBranch.branch).toBeNull();
  await expectAggregatesExact(t);
});

test("pending -> claimed: claimOne takes the job with a lease", async () => {
  const t = makeT();
  const jobId = await enqueue(t, { branch: "dev" });
  const before = Date.now();
  const c = await claimOk(t, "worker-a", 90_000);
  expect(c).toMatchObject({
    jobId,
    attempt: 1,
    maxAttempts: 3,
    repoUrl: "https://github.com/acme/widgets",
    branch: "dev",
    userId: "operator",
  });
  expect(c.leaseToken.length).toBeGreaterThan(10);
  expect(c.githubToken).toBeUndefined();
  expect(c.leaseUntil).toBeGreaterThanOrEqual(before + 90_000);
  expect(c.leaseUntil).toBeLessThanOrEqual(Date.now() + 90_000 + 50);
  const job = await getJob(t, jobId);
  expect(job).toMatchObject({ status: "claimed", attempts: 1, lockedBy: "worker-a" });
  expect(await claim(t)).toBeNull(); // nothing else to take
  await expectAggregatesExact(t);
});

test("claimed -> running: start, and a repeated start is a no-op", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
  const job = await getJob(t, jobId);
  expect(job.status).toBe("running");
  expect(job.startedAt).toBeDefined();
  advance(1000);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
  expect((await getJob(t, jobId)).startedAt).toBe(job.startedAt);
  await expectAggregatesExact(t);
});

test("running -> running: heartbeat extends the lease and records progress", async () => {
  const t = makeT();
  const { jobId, leaseToken, claim: c } = await runningJob(t);
  advance(30_000);
  const hb = await t.mutation(api.jobs.heartbeat, {
    token: TOKEN,
    jobId,
    leaseToken,
    leaseMs: 120_000,
    progress: { step: "clone", currentStep: 1, totalSteps: 6, message: "cloning" },
  });
  expect(hb.cancelRequested).toBe(false);
  expect(hb.leaseUntil).toBeGreaterThan(c.leaseUntil);
  expect(hb.leaseUntil).toBeGreaterThanOrEqual(Date.now() + 120_000);
  await t.mutation(api.jobs.heartbeat, {
    token: TOKEN,
    jobId,
    leaseToken,
    leaseMs: 120_000,
    progress: { currentStep: 2, message: "analyzing" },
  });
  const job = await getJob(t, jobId);
  expect(job.status).toBe("running");
  expect(job.leaseUntil).toBeGreaterThanOrEqual(hb.leaseUntil);
  expect(job.progress).toEqual({ step: "clone", currentStep: 2, totalSteps: 6, message: "analyzing" });
  // heartbeat also works while claimed (before start)
  const other = await enqueue(t);
  const c2 = await claimOk(t, "w2");
  expect(c2.jobId).toBe(other);
  const hb2 = await t.mutation(api.jobs.heartbeat, {
    token: TOKEN,
    jobId: other,
    leaseToken: c2.leaseToken,
    leaseMs: 5_000,
  });
  expect(hb2.cancelRequested).toBe(false);
});

test("heartbeat rejects an out-of-range leaseMs", async () => {
  const t = makeT();
  const { jobId, leaseToken } = await runningJob(t);
  for (const leaseMs of [0, 999, -1, Number.NaN, 7 * 60 * 60_000]) {
    await expectCode(
      t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId, leaseToken, leaseMs }),
      "INVALID_ARGUMENT",
    );
  }
});

test("running -> completed: complete records the summary and ends the lease", async () => {
  const t = makeT();
  const { jobId, leaseToken } = await runningJob(t);
  advance(42_000);
  await t.mutation(api.jobs.complete, {
    token: TOKEN,
    jobId,
    leaseToken,
    runId: "run-1",
    summary: { docsCount: 0, durationMs: 42_000, costUsd: 0.12 },
  });
  const job = await getJob(t, jobId);
  expect(job.status).toBe("completed");
  expect(job.result).toEqual({ docsCount: 0, durationMs: 42_000, costUsd: 0.12 });
  expect(job.completedAt).toBeDefined();
  expect(job.leaseUntil).toBeUndefined();
  // a retried complete whose reply was lost is a no-op
  await t.mutation(api.jobs.complete, {
    token: TOKEN,
    jobId,
    leaseToken,
    runId: "run-1",
    summary: { docsCount: 0, durationMs: 42_000 },
  });
  // but any other worker call is fenced
  await expectCode(
    t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId, leaseToken, leaseMs: 10_000 }),
    "LEASE_LOST",
  );
  await expectAggregatesExact(t);
});

test("claimed -> completed without start is allowed", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  await t.mutation(api.jobs.complete, {
    token: TOKEN,
    jobId,
    leaseToken: c.leaseToken,
    runId: "r",
    summary: { docsCount: 0, durationMs: 1 },
  });
  expect((await getJob(t, jobId)).status).toBe("completed");
});

test("running -> failed (attempts left) -> claimed again after runAt", async () => {
  const t = makeT();
  const { jobId, leaseToken } = await runningJob(t);
  const r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN,
    jobId,
    leaseToken,
    error: "network down",
    errorKind: "transient",
  });
  expect(r.status).toBe("failed");
  expect(r.runAt).toBeGreaterThanOrEqual(Date.now() + BACKOFF_BASE_MS / 2 - 5);
  const job = await getJob(t, jobId);
  expect(job).toMatchObject({ status: "failed", attempts: 1, lastError: "network down", lastErrorKind: "transient" });
  expect(await claim(t)).toBeNull(); // not before runAt
  advance(r.runAt! - Date.now());
  const c2 = await claimOk(t);
  expect(c2).toMatchObject({ jobId, attempt: 2 });
  expect(c2.leaseToken).not.toBe(leaseToken);
  await expectAggregatesExact(t);
});

test("timeout consumes an attempt like transient", async () => {
  const t = makeT();
  const { jobId, leaseToken } = await runningJob(t);
  const r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId, leaseToken, error: "took too long", errorKind: "timeout",
  });
  expect(r.status).toBe("failed");
  expect((await getJob(t, jobId)).attempts).toBe(1);
});

test("running -> dead: transient failure on the last attempt", async () => {
  const t = makeT();
  const jobId = await enqueue(t, { maxAttempts: 2 });
  for (let attempt = 1; attempt <= 2; attempt++) {
    const c = await claimOk(t);
    expect(c.attempt).toBe(attempt);
    await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
    const r = await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId, leaseToken: c.leaseToken, error: `boom ${attempt}`, errorKind: "transient",
    });
    expect(r.status).toBe(attempt < 2 ? "failed" : "dead");
    if (r.runAt !== undefined) advance(r.runAt - Date.now());
  }
  const job = await getJob(t, jobId);
  expect(job).toMatchObject({ status: "dead", attempts: 2, lastError: "boom 2" });
  expect(await claim(t)).toBeNull();
  await expectAggregatesExact(t);
});

test.each(["permanent", "invalid_repository", "repository_not_found"] as const)(
  "running -> dead at once: %s",
  async (errorKind) => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    const r = await t.mutation(api.jobs.retryOrFail, { token: TOKEN, jobId, leaseToken, error: "no", errorKind });
    expect(r).toEqual({ status: "dead" });
    expect(await getJob(t, jobId)).toMatchObject({ status: "dead", attempts: 1, lastErrorKind: errorKind });
    await expectAggregatesExact(t);
  },
);

test.each(["auth", "usage_limit", "disk", "shutdown"] as const)(
  "running -> pending without consuming an attempt: %s",
  async (errorKind) => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    const r = await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId, leaseToken, error: "not the job's fault", errorKind, retryAfterMs: 60_000,
    });
    expect(r.status).toBe("pending");
    expect(r.runAt).toBeGreaterThanOrEqual(Date.now() + 60_000 - 5);
    expect(r.runAt).toBeLessThanOrEqual(Date.now() + 60_000 + 5);
    expect(await getJob(t, jobId)).toMatchObject({ status: "pending", attempts: 0, deferrals: 1 });
    expect(await claim(t)).toBeNull();
    advance(60_001);
    expect((await claimOk(t)).attempt).toBe(1);
    await expectAggregatesExact(t);
  },
);

test("running -> pending: release gives the attempt back", async () => {
  const t = makeT();
  const { jobId, leaseToken } = await runningJob(t);
  await t.mutation(api.jobs.release, { token: TOKEN, jobId, leaseToken, reason: "SIGTERM" });
  const job = await getJob(t, jobId);
  expect(job).toMatchObject({ status: "pending", attempts: 0, deferrals: 1 });
  expect(job.runAt).toBeLessThanOrEqual(Date.now() + 5); // the fake clock creeps 1 ms per commit
  const c = await claimOk(t, "w2");
  expect(c).toMatchObject({ jobId, attempt: 1 });
  await expectAggregatesExact(t);
});

test("running -> pending: the reclaim cron returns a job whose lease expired", async () => {
  const t = makeT();
  const { jobId } = await runningJob(t);
  advance(60_100); // past the lease (the frozen clock creeps 1 ms per commit)
  const r = await t.mutation(internal.jobs.reclaimExpired, {});
  expect(r).toEqual({ moved: 1, dead: 0, canceled: 0 });
  const job = await getJob(t, jobId);
  expect(job).toMatchObject({ status: "pending", attempts: 1, lastErrorKind: "lease_expired" });
  expect((await claimOk(t)).attempt).toBe(2);
  await expectAggregatesExact(t);
});

test.each(["claimed", "running"] as const)(
  "%s -> claimed: claimOne re-claims an expired lease with a new token",
  async (state) => {
    const t = makeT();
    const jobId = await enqueue(t);
    const first = await claimOk(t, "w1", 10_000);
    if (state === "running") {
      await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: first.leaseToken });
    }
    expect(await claim(t, "w2")).toBeNull(); // lease still valid
    advance(10_001);
    const second = await claimOk(t, "w2");
    expect(second).toMatchObject({ jobId, attempt: 2 });
    expect(second.leaseToken).not.toBe(first.leaseToken);
    expect(await getJob(t, jobId)).toMatchObject({ status: "claimed", lockedBy: "w2", lastErrorKind: "lease_expired" });
    await expectAggregatesExact(t);
  },
);

test("an expired lease on the last attempt becomes dead during claim, and the next job is taken", async () => {
  const t = makeT();
  const poison = await enqueue(t, { maxAttempts: 1 });
  const c = await claimOk(t, "w1", 5_000);
  expect(c.jobId).toBe(poison);
  advance(10_000);
  const next = await enqueue(t); // ready after the poison job's lease expired
  advance(1_000);
  const c2 = await claimOk(t, "w2");
  expect(c2.jobId).toBe(next);
  expect(await getJob(t, poison)).toMatchObject({ status: "dead", lastErrorKind: "lease_expired" });
  await expectAggregatesExact(t);
});

describe("cancel", () => {
  test("pending -> canceled at once", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    expect(await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR })).toEqual({ status: "canceled" });
    expect((await getJob(t, jobId)).status).toBe("canceled");
    expect(await claim(t)).toBeNull();
    await expectAggregatesExact(t);
  });

  test("failed -> canceled at once", async () => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    await t.mutation(api.jobs.retryOrFail, { token: TOKEN, jobId, leaseToken, error: "x", errorKind: "transient" });
    expect(await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR })).toEqual({ status: "canceled" });
    advance(3_600_000);
    expect(await claim(t)).toBeNull();
    await expectAggregatesExact(t);
  });

  test.each(["claimed", "running"] as const)(
    "%s -> cancelRequested, seen at heartbeat, -> canceled on acknowledgeCancel",
    async (state) => {
      const t = makeT();
      const jobId = await enqueue(t);
      const c = await claimOk(t);
      if (state === "running") {
        await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
      }
      expect(await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR })).toEqual({ status: state });
      expect(await getJob(t, jobId)).toMatchObject({ status: state, cancelRequested: true });
      // cancelling twice changes nothing
      expect(await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR })).toEqual({ status: state });
      const hb = await t.mutation(api.jobs.heartbeat, {
        token: TOKEN, jobId, leaseToken: c.leaseToken, leaseMs: 60_000,
      });
      expect(hb.cancelRequested).toBe(true);
      await t.mutation(api.jobs.acknowledgeCancel, { token: TOKEN, jobId, leaseToken: c.leaseToken });
      expect((await getJob(t, jobId)).status).toBe("canceled");
      await expectAggregatesExact(t);
    },
  );

  test.each(["completed", "dead", "canceled"] as const)("%s stays as it is", async (terminal) => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    if (terminal === "completed") {
      await t.mutation(api.jobs.complete, {
        token: TOKEN, jobId, leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
      });
    } else if (terminal === "dead") {
      await t.mutation(api.jobs.retryOrFail, { token: TOKEN, jobId, leaseToken, error: "x", errorKind: "permanent" });
    } else {
      await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
      await t.mutation(api.jobs.acknowledgeCancel, { token: TOKEN, jobId, leaseToken });
    }
    expect(await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR })).toEqual({ status: terminal });
    expect((await getJob(t, jobId)).status).toBe(terminal);
  });

  test("acknowledgeCancel without a cancel request is INVALID_STATE", async () => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    await expectCode(
      t.mutation(api.jobs.acknowledgeCancel, { token: TOKEN, jobId, leaseToken }),
      "INVALID_STATE",
    );
  });

  test("a failure reported after a cancel request ends the job canceled", async () => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
    const r = await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId, leaseToken, error: "killed", errorKind: "transient",
    });
    expect(r).toEqual({ status: "canceled" });
    await expectAggregatesExact(t);
  });

  test("a release after a cancel request ends the job canceled", async () => {
    const t = makeT();
    const { jobId, leaseToken } = await runningJob(t);
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
    await t.mutation(api.jobs.release, { token: TOKEN, jobId, leaseToken, reason: "shutdown" });
    expect((await getJob(t, jobId)).status).toBe("canceled");
  });

  test("a job whose worker died after a cancel request is canceled by reclaim", async () => {
    const t = makeT();
    const { jobId } = await runningJob(t);
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
    advance(60_100);
    expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 0, dead: 0, canceled: 1 });
    expect((await getJob(t, jobId)).status).toBe("canceled");
  });

  test("cancel of an unknown job is NOT_FOUND", async () => {
    const t = makeT();
    await expectCode(t.mutation(api.jobs.cancel, { jobId: "nope", token: OPERATOR }), "NOT_FOUND");
  });
});

test("terminal states keep no secrets", async () => {
  const t = makeT();
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(await enqueue(t, { githubToken: `ghp_secret${i}` }));
  const c1 = await claimOk(t);
  expect(c1.githubToken).toBe("ghp_secret0");
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId: c1.jobId, leaseToken: c1.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
  });
  const c2 = await claimOk(t);
  await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId: c2.jobId, leaseToken: c2.leaseToken, error: "x", errorKind: "repository_not_found",
  });
  await t.mutation(api.jobs.cancel, { jobId: ids[2], token: OPERATOR });
  const secrets = await t.run(async (ctx) => await ctx.db.query("jobSecrets").collect());
  expect(secrets).toEqual([]);
  for (const id of ids) expect((await rawJob(t, id))!.hasSecret).toBe(false);
  await expectAggregatesExact(t);
});
