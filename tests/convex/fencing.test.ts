// A worker that lost its lease can never touch the job again: every fenced mutation refuses
// the stale token with LEASE_LOST once the lease expired and the job was re-claimed.
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import {
  OPERATOR,
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

const doc = { slug: "intro", title: "Intro", kind: "chapter" as const, order: 1, content: "# Intro" };

/** The calls a stale worker might still make with its old lease token. */
function staleCalls(t: T, jobId: string, leaseToken: string) {
  return {
    start: () => t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken }),
    heartbeat: () => t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId, leaseToken, leaseMs: 60_000 }),
    uploadDocs: () =>
      t.mutation(api.docs.uploadDocs, { token: TOKEN, jobId, leaseToken, runId: "stale-run", docs: [doc] }),
    complete: () =>
      t.mutation(api.jobs.complete, {
        token: TOKEN, jobId, leaseToken, runId: "stale-run", summary: { docsCount: 0, durationMs: 1 },
      }),
    retryOrFail: () =>
      t.mutation(api.jobs.retryOrFail, { token: TOKEN, jobId, leaseToken, error: "x", errorKind: "permanent" }),
    release: () => t.mutation(api.jobs.release, { token: TOKEN, jobId, leaseToken, reason: "stale" }),
    acknowledgeCancel: () => t.mutation(api.jobs.acknowledgeCancel, { token: TOKEN, jobId, leaseToken }),
  };
}
const CALLS = ["start", "heartbeat", "uploadDocs", "complete", "retryOrFail", "release", "acknowledgeCancel"] as const;

describe("after the lease expired and another worker re-claimed the job", () => {
  test.each(CALLS)("%s with the stale token is LEASE_LOST and changes nothing", async (call) => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t, "worker-a", 30_000);
    await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: a.leaseToken });
    advance(30_001);
    const b = await claimOk(t, "worker-b", 60_000);
    expect(b.jobId).toBe(jobId);
    // a cancel request makes acknowledgeCancel otherwise valid
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
    const before = await rawJob(t, jobId);

    await expectCode(staleCalls(t, jobId, a.leaseToken)[call](), "LEASE_LOST");

    const after = await rawJob(t, jobId);
    expect(after).toEqual(before);
    const docs = await t.run(async (ctx) => await ctx.db.query("docs").collect());
    expect(docs).toEqual([]);
    // worker B still holds it
    const hb = await t.mutation(api.jobs.heartbeat, {
      token: TOKEN, jobId, leaseToken: b.leaseToken, leaseMs: 60_000,
    });
    expect(hb.cancelRequested).toBe(true);
    await expectAggregatesExact(t);
  });
});

describe("after the reclaim cron returned the job to pending", () => {
  test.each(CALLS)("%s with the old token is LEASE_LOST", async (call) => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t, "worker-a", 30_000);
    advance(30_100); // past the lease (the frozen clock creeps 1 ms per commit)
    expect((await t.mutation(internal.jobs.reclaimExpired, {})).moved).toBe(1);
    await expectCode(staleCalls(t, jobId, a.leaseToken)[call](), "LEASE_LOST");
    expect((await getJob(t, jobId)).status).toBe("pending");
  });
});

describe("after the job ended", () => {
  test.each(CALLS.filter((c) => c !== "complete"))("%s is LEASE_LOST on a completed job", async (call) => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId, leaseToken: a.leaseToken, runId: "r1", summary: { docsCount: 0, durationMs: 1 },
    });
    await expectCode(staleCalls(t, jobId, a.leaseToken)[call](), "LEASE_LOST");
    expect((await getJob(t, jobId)).status).toBe("completed");
  });

  test("complete with another runId after completion is LEASE_LOST", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId, leaseToken: a.leaseToken, runId: "r1", summary: { docsCount: 0, durationMs: 1 },
    });
    await expectCode(staleCalls(t, jobId, a.leaseToken).complete(), "LEASE_LOST");
  });
});

test("a lease that expired but was not taken still belongs to its holder", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const a = await claimOk(t, "worker-a", 10_000);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: a.leaseToken });
  advance(20_000); // expired, nobody claimed, no cron ran
  const hb = await t.mutation(api.jobs.heartbeat, {
    token: TOKEN, jobId, leaseToken: a.leaseToken, leaseMs: 10_000,
  });
  expect(hb.leaseUntil).toBeGreaterThan(Date.now());
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId, leaseToken: a.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
  });
  expect((await getJob(t, jobId)).status).toBe("completed");
});

test("a made-up or mangled lease token is LEASE_LOST; an unknown job is NOT_FOUND", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const a = await claimOk(t);
  for (const leaseToken of ["", "x", `${a.leaseToken}x`, a.leaseToken.slice(0, -1), a.leaseToken.toUpperCase()]) {
    await expectCode(
      t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId, leaseToken, leaseMs: 10_000 }),
      "LEASE_LOST",
    );
  }
  await expectCode(
    t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId: "not-an-id", leaseToken: a.leaseToken, leaseMs: 10_000 }),
    "NOT_FOUND",
  );
  // an id of another table is not a job either
  const otherId = await t.run(async (ctx) => (await ctx.db.query("queueEvents").first())!._id as string);
  await expectCode(
    t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId: otherId, leaseToken: a.leaseToken, leaseMs: 10_000 }),
    "NOT_FOUND",
  );
});

test("lease tokens are unique per claim of the same job", async () => {
  const t = makeT();
  const jobId = await enqueue(t, { maxAttempts: 10 });
  const tokens = new Set<string>();
  for (let i = 0; i < 10; i++) {
    const c = await claimOk(t, "w", 1_000);
    expect(c.jobId).toBe(jobId);
    tokens.add(c.leaseToken);
    advance(1_001);
  }
  expect(tokens.size).toBe(10);
  const job = await rawJob(t, jobId);
  expect(job!.leaseGeneration).toBe(10);
});

describe("a final call retried after its reply was lost is answered as applied", () => {
  test("retryOrFail: the same reply, nothing changed twice", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t);
    const args = { token: TOKEN, jobId, leaseToken: a.leaseToken, error: "boom", errorKind: "transient" as const };
    const first = await t.mutation(api.jobs.retryOrFail, args);
    const before = await rawJob(t, jobId);
    const again = await t.mutation(api.jobs.retryOrFail, args);
    expect(first.status).toBe("failed");
    expect(again).toEqual(first);
    expect(await rawJob(t, jobId)).toEqual(before);
    await expectAggregatesExact(t);
  });

  test("release and acknowledgeCancel: null again, nothing changed twice", async () => {
    const t = makeT();
    const released = await enqueue(t);
    const a = await claimOk(t);
    const rel = { token: TOKEN, jobId: released, leaseToken: a.leaseToken, reason: "shutdown" };
    await t.mutation(api.jobs.release, rel);
    const afterRelease = await rawJob(t, released);
    expect(await t.mutation(api.jobs.release, rel)).toBeNull();
    expect(await rawJob(t, released)).toEqual(afterRelease);
    expect(afterRelease!.deferrals).toBe(1);

    advance(10);
    const canceled = await enqueue(t, { repoUrl: "https://github.com/acme/other" });
    // the released job is ready again and older: take it first, then the second one
    const again = await claimOk(t, "w2");
    expect(again.jobId).toBe(released);
    const b = await claimOk(t, "w3");
    expect(b.jobId).toBe(canceled);
    await t.mutation(api.jobs.cancel, { jobId: canceled, token: OPERATOR });
    const ack = { token: TOKEN, jobId: canceled, leaseToken: b.leaseToken };
    await t.mutation(api.jobs.acknowledgeCancel, ack);
    expect(await t.mutation(api.jobs.acknowledgeCancel, ack)).toBeNull();
    expect((await getJob(t, canceled)).status).toBe("canceled");
    await expectAggregatesExact(t);
  });

  test("once the job was claimed again, the old holder's retry is LEASE_LOST", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t, "worker-a");
    const rel = { token: TOKEN, jobId, leaseToken: a.leaseToken, reason: "shutdown" };
    await t.mutation(api.jobs.release, rel);
    const b = await claimOk(t, "worker-b");
    expect(b.jobId).toBe(jobId);
    await expectCode(t.mutation(api.jobs.release, rel), "LEASE_LOST");
    await expectCode(
      t.mutation(api.jobs.retryOrFail, {
        token: TOKEN, jobId, leaseToken: a.leaseToken, error: "x", errorKind: "transient",
      }),
      "LEASE_LOST",
    );
    expect((await getJob(t, jobId)).status).toBe("claimed");
  });

  test("a different final call with the old token is still LEASE_LOST", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    const a = await claimOk(t);
    await t.mutation(api.jobs.release, { token: TOKEN, jobId, leaseToken: a.leaseToken, reason: "x" });
    await expectCode(
      t.mutation(api.jobs.retryOrFail, {
        token: TOKEN, jobId, leaseToken: a.leaseToken, error: "x", errorKind: "permanent",
      }),
      "LEASE_LOST",
    );
    expect((await getJob(t, jobId)).status).toBe("pending");
  });
});
