// Separate credentials, fail-closed: the operator token (OPERATOR_TOKEN) is the only
// credential the operator functions accept, the worker token (WORKER_TOKEN) only claims and
// reports on its own leases (and reads the aggregate metrics), whether or not the deployment
// has an operator token; each has a _NEXT twin accepted during a rotation.
import { ConvexError } from "convex/values";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api } from "../../convex/_generated/api";
import { OPERATOR, REPO, TOKEN, claimOk, expectCode, makeT, setupEnv, teardownEnv, type T } from "./helpers";

beforeEach(setupEnv); // WORKER_TOKEN and OPERATOR_TOKEN set
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

const OPERATOR_CALLS = [
  "listStuck",
  "reclaimNow",
  "requeue",
  "enqueue",
  "cancel",
  "get",
  "listByUser",
  "listDocs",
  "getDoc",
] as const;

/** The ConvexError data of a refused call. */
async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ConvexError);
    return (e as ConvexError<{ code: string; message: string }>).data;
  }
  throw new Error("expected the call to be refused");
}

/** Jobs and counts as stored, to prove a refused call changed nothing. */
async function snapshot(t: T) {
  return await t.run(async (ctx) => ({
    jobs: await ctx.db.query("jobs").collect(),
    counters: await ctx.db.query("counters").collect(),
  }));
}

describe("with OPERATOR_TOKEN set", () => {
  test.each(OPERATOR_CALLS)("the worker token is refused by %s and changes nothing", async (name) => {
    const t = makeT();
    const { jobId } = await heldJob(t);
    const before = await snapshot(t);
    expect(await refusal(operatorCalls(t, TOKEN, jobId)[name]())).toEqual({
      code: "UNAUTHORIZED",
      message: "unauthorized",
    });
    expect(await snapshot(t)).toEqual(before);
  });

  test("the worker token is refused even beside a signed-in user's identity", async () => {
    const t = makeT();
    const { jobId } = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, userId: "ada" });
    const ada = t.withIdentity({ subject: "ada" });
    expect((await ada.query(api.jobs.get, { jobId }))?.jobId).toBe(jobId);
    await expectCode(ada.query(api.jobs.get, { jobId, token: TOKEN }), "UNAUTHORIZED");
    await expectCode(ada.query(api.docs.listByJob, { jobId, token: TOKEN }), "UNAUTHORIZED");
  });

  test("a worker reads no documents, not even those of the job it just completed", async () => {
    const t = makeT();
    const { jobId, leaseToken } = await heldJob(t);
    await t.mutation(api.jobs.complete, {
      token: TOKEN,
      jobId,
      leaseToken,
      runId: "r",
      docs: [{ slug: "index", title: "Index", kind: "toc", order: 0, content: "# hi\n" }],
      summary: { docsCount: 1, durationMs: 1 },
    });
    expect((await t.query(api.docs.listByJob, { jobId, token: OPERATOR })).map((d) => d.slug)).toEqual(["index"]);
    await expectCode(t.query(api.docs.listByJob, { jobId, token: TOKEN }), "UNAUTHORIZED");
    await expectCode(t.query(api.docs.getDoc, { jobId, slug: "index", token: TOKEN }), "UNAUTHORIZED");
  });

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

describe("without OPERATOR_TOKEN (fail-closed)", () => {
  /** A job held by a worker, enqueued while the deployment still had an operator token. */
  async function heldThenUnset(t: T) {
    const held = await heldJob(t);
    vi.stubEnv("OPERATOR_TOKEN", "");
    vi.stubEnv("OPERATOR_TOKEN_NEXT", "");
    return held;
  }

  test.each(OPERATOR_CALLS)(
    "the worker token is refused by %s, and the error names OPERATOR_TOKEN",
    async (name) => {
      const t = makeT();
      const { jobId } = await heldThenUnset(t);
      const before = await snapshot(t);
      const data = await refusal(operatorCalls(t, TOKEN, jobId)[name]());
      expect(data.code).toBe("UNAUTHORIZED");
      expect(data.message).toContain("no operator token is configured");
      expect(data.message).toContain("OPERATOR_TOKEN");
      expect(await snapshot(t)).toEqual(before);
    },
  );

  test("so is any other token, including the former operator token", async () => {
    const t = makeT();
    const { jobId } = await heldThenUnset(t);
    for (const token of [OPERATOR, "", "nope-nope-nope-nope"]) {
      const data = await refusal(operatorCalls(t, token, jobId).listStuck());
      expect(data.code).toBe("UNAUTHORIZED");
      expect(data.message).toContain("OPERATOR_TOKEN");
    }
  });

  test("with OPERATOR_TOKEN removed from the environment altogether", async () => {
    const t = makeT();
    const { jobId } = await heldJob(t);
    vi.stubEnv("OPERATOR_TOKEN", undefined as unknown as string);
    await expectCode(operatorCalls(t, TOKEN, jobId).requeue(), "UNAUTHORIZED");
    await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: TOKEN }), "UNAUTHORIZED");
  });

  test("the worker functions, its lease-token read and the metrics still work", async () => {
    vi.stubEnv("OPERATOR_TOKEN", "");
    const t = makeT();
    // users still enqueue through their identity; the worker claims and reads what it holds
    const ada = t.withIdentity({ subject: "ada" });
    const mine = await ada.mutation(api.jobs.enqueue, { repoUrl: REPO });
    const c = await claimOk(t);
    expect(c.jobId).toBe(mine.jobId);
    const held = await t.query(api.jobs.get, { jobId: c.jobId, token: TOKEN, leaseToken: c.leaseToken });
    expect(held?.status).toBe("claimed");
    await t.mutation(api.jobs.heartbeat, { token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, leaseMs: 60_000 });
    expect((await t.query(api.metrics.queue, { token: TOKEN })).counts.claimed).toBe(1);
  });

  test("OPERATOR_TOKEN_NEXT alone (mid-rotation) is an operator token; the worker token still is not", async () => {
    const t = makeT();
    const { jobId } = await heldThenUnset(t);
    const next = "next-operator-token-0123456789";
    vi.stubEnv("OPERATOR_TOKEN_NEXT", next);
    expect((await t.query(api.jobs.get, { jobId, token: next }))?.status).toBe("claimed");
    await expectCode(t.query(api.jobs.get, { jobId, token: TOKEN }), "UNAUTHORIZED");
  });
});

test("an OPERATOR_TOKEN equal to the worker token gives the worker no operator rights", async () => {
  vi.stubEnv("OPERATOR_TOKEN", TOKEN);
  const t = makeT();
  const data = await refusal(t.query(api.operator.listStuck, { token: TOKEN }));
  expect(data.code).toBe("UNAUTHORIZED");
  expect(data.message).toContain("OPERATOR_TOKEN equals the worker token");
  await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: TOKEN }), "UNAUTHORIZED");
  // the same value during a worker-token rotation (WORKER_TOKEN_NEXT) is refused too
  vi.stubEnv("OPERATOR_TOKEN", OPERATOR);
  vi.stubEnv("WORKER_TOKEN_NEXT", OPERATOR);
  await expectCode(t.query(api.operator.listStuck, { token: OPERATOR }), "UNAUTHORIZED");
});
