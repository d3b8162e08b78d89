// Separate credentials: the operator token (OPERATOR_TOKEN) runs the operator functions, the
// worker token (WORKER_TOKEN) only claims and reports on its own leases; each has a _NEXT
// twin accepted during a rotation.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api } from "../../convex/_generated/api";
import { REPO, TOKEN, claimOk, expectCode, makeT, setupEnv, teardownEnv, type T } from "./helpers";

const OPERATOR = "test-operator-token-9876543210";

beforeEach(() => {
  setupEnv();
  vi.stubEnv("OPERATOR_TOKEN", OPERATOR);
});
afterEach(teardownEnv);

async function heldJob(t: T) {
  const { jobId } = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, userId: "ada" });
  const c = await claimOk(t);
  return { jobId, leaseToken: c.leaseToken };
}

/** Every operator-only call, with `token` as the credential. */
function operatorCalls(t: T, token: string, jobId: string) {
  return {
    listStuck: () => t.query(api.operator.listStuck, { token }),
    reclaimNow: () => t.mutation(api.operator.reclaimNow, { token }),
    requeue: () => t.mutation(api.operator.requeue, { token, jobId }),
    enqueue: () => t.mutation(api.jobs.enqueue, { repoUrl: REPO, token }),
    cancel: () => t.mutation(api.jobs.cancel, { jobId, token }),
    get: () => t.query(api.jobs.get, { jobId, token }),
    listByUser: () => t.query(api.jobs.listByUser, { userId: "ada", token }),
    listDocs: () => t.query(api.docs.listByJob, { jobId, token }),
    getDoc: () => t.query(api.docs.getDoc, { jobId, slug: "index", token }),
  };
}

describe("with OPERATOR_TOKEN set", () => {
  test.each(["listStuck", "reclaimNow", "requeue", "enqueue", "cancel", "get", "listByUser", "listDocs", "getDoc"] as const)(
    "the worker token is refused by %s",
    async (name) => {
      const t = makeT();
      const { jobId } = await heldJob(t);
      await expectCode(operatorCalls(t, TOKEN, jobId)[name](), "UNAUTHORIZED");
    },
  );

  test("the operator token runs them", async () => {
    const t = makeT();
    const { jobId } = await heldJob(t);
    const calls = operatorCalls(t, OPERATOR, jobId);
    expect(await calls.listStuck()).toEqual([]);
    expect((await calls.reclaimNow()).moved).toBe(0);
    await expectCode(calls.requeue(), "INVALID_STATE"); // authorized, but the job is not dead
    expect((await calls.get())?.status).toBe("claimed");
    expect((await calls.listByUser()).map((j) => j.jobId)).toEqual([jobId]);
    expect(await calls.listDocs()).toEqual([]);
    expect(await calls.getDoc()).toBeNull();
    expect((await calls.cancel()).status).toBe("claimed");
  });

  test("the operator token is refused by the worker functions", async () => {
    const t = makeT();
    const { jobId, leaseToken } = await heldJob(t);
    await expectCode(
      t.mutation(api.jobs.claimOne, { token: OPERATOR, workerId: "w", leaseMs: 60_000, requestId: "r" }),
      "UNAUTHORIZED",
    );
    await expectCode(
      t.mutation(api.jobs.heartbeat, { token: OPERATOR, jobId, leaseToken, leaseMs: 60_000 }),
      "UNAUTHORIZED",
    );
  });

  test("a worker reads the job it holds, with its lease token, and no other", async () => {
    const t = makeT();
    const mine = await heldJob(t);
    const other = await heldJob(t);
    const read = (jobId: string, leaseToken: string) => t.query(api.jobs.get, { jobId, token: TOKEN, leaseToken });
    expect((await read(mine.jobId, mine.leaseToken))?.jobId).toBe(mine.jobId);
    expect(await read(other.jobId, mine.leaseToken)).toBeNull();
    expect(await read(mine.jobId, "1.forged.token")).toBeNull();
    await expectCode(t.query(api.jobs.get, { jobId: mine.jobId, token: OPERATOR, leaseToken: mine.leaseToken }), "UNAUTHORIZED");
  });

  test("queue metrics (counts only) accept either token", async () => {
    const t = makeT();
    await heldJob(t);
    expect((await t.query(api.metrics.queue, { token: TOKEN })).counts.claimed).toBe(1);
    expect((await t.query(api.metrics.queue, { token: OPERATOR })).counts.claimed).toBe(1);
    await expectCode(t.query(api.metrics.queue, { token: "nope-nope-nope-nope" }), "UNAUTHORIZED");
  });
});

describe("rotation: two accepted values, then only the new one", () => {
  test("worker token", async () => {
    const t = makeT();
    const claimWith = (token: string, requestId: string) =>
      t.mutation(api.jobs.claimOne, { token, workerId: "w", leaseMs: 60_000, requestId });
    const next = "next-worker-token-0123456789";
    await expectCode(claimWith(next, "r1"), "UNAUTHORIZED");
    vi.stubEnv("WORKER_TOKEN_NEXT", next); // step 1: accept both
    expect(await claimWith(TOKEN, "r2")).toBeNull();
    expect(await claimWith(next, "r3")).toBeNull();
    vi.stubEnv("WORKER_TOKEN", next); // step 3: the new value is current, the old one goes
    vi.stubEnv("WORKER_TOKEN_NEXT", "");
    expect(await claimWith(next, "r4")).toBeNull();
    await expectCode(claimWith(TOKEN, "r5"), "UNAUTHORIZED");
  });

  test("operator token", async () => {
    const t = makeT();
    const next = "next-operator-token-0123456789";
    vi.stubEnv("OPERATOR_TOKEN_NEXT", next);
    expect(await t.query(api.operator.listStuck, { token: OPERATOR })).toEqual([]);
    expect(await t.query(api.operator.listStuck, { token: next })).toEqual([]);
    vi.stubEnv("OPERATOR_TOKEN", next);
    vi.stubEnv("OPERATOR_TOKEN_NEXT", "");
    await expectCode(t.query(api.operator.listStuck, { token: OPERATOR }), "UNAUTHORIZED");
    // the worker token never gains operator rights while an operator token is set
    await expectCode(t.query(api.operator.listStuck, { token: TOKEN }), "UNAUTHORIZED");
  });
});

test("without OPERATOR_TOKEN the worker token keeps the operator rights (single-token setup)", async () => {
  vi.stubEnv("OPERATOR_TOKEN", "");
  const t = makeT();
  expect(await t.query(api.operator.listStuck, { token: TOKEN })).toEqual([]);
  const { jobId } = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: TOKEN });
  expect((await t.query(api.jobs.get, { jobId, token: TOKEN }))?.status).toBe("pending");
});
