// Client-facing functions and authentication of every function.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api } from "../../convex/_generated/api";
import {
  OPERATOR,
  REPO,
  TOKEN,
  claimOk,
  enqueue,
  expectAggregatesExact,
  expectCode,
  getJob,
  makeT,
  setupEnv,
  teardownEnv,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

describe("enqueue validation", () => {
  test.each([
    ["ext:: URL", { repoUrl: "ext::sh -c 'touch /tmp/pwned'" }],
    ["ext:: https", { repoUrl: "ext::https://github.com/acme/widgets" }],
    ["file:// URL", { repoUrl: "file:///etc/passwd" }],
    ["file:// repo", { repoUrl: "file://github.com/acme/widgets" }],
    ["ssh URL", { repoUrl: "ssh://git@github.com/acme/widgets.git" }],
    ["credentials", { repoUrl: "https://token@github.com/acme/widgets" }],
    ["query", { repoUrl: "https://github.com/acme/widgets?ref=x" }],
    ["host not allowed", { repoUrl: "https://gitlab.com/acme/widgets" }],
    ["over-long URL", { repoUrl: `https://github.com/acme/${"w".repeat(1000)}` }],
    ["option-like branch", { branch: "--upload-pack=x" }],
    ["dash branch", { branch: "-x" }],
    ["branch with ..", { branch: "a..b" }],
    ["branch with space", { branch: "a b" }],
    ["over-long branch", { branch: "b".repeat(256) }],
    ["over-long dedupeKey", { dedupeKey: "k".repeat(201) }],
    ["dedupeKey with newline", { dedupeKey: "a\nb" }],
    ["over-long githubToken", { githubToken: "g".repeat(1001) }],
    ["githubToken with space", { githubToken: "ghp abc" }],
    ["maxAttempts 0", { maxAttempts: 0 }],
    ["maxAttempts 11", { maxAttempts: 11 }],
    ["maxAttempts 2.5", { maxAttempts: 2.5 }],
    ["over-long userId", { userId: "u".repeat(201) }],
    ["userId with space", { userId: "a b" }],
  ])("rejects %s with INVALID_ARGUMENT and creates nothing", async (_name, extra) => {
    const t = makeT();
    await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, ...extra }), "INVALID_ARGUMENT");
    const jobs = await t.run(async (ctx) => await ctx.db.query("jobs").collect());
    expect(jobs).toEqual([]);
  });

  test("ALLOWED_REPO_HOSTS replaces the default list", async () => {
    const t = makeT();
    vi.stubEnv("ALLOWED_REPO_HOSTS", "git.example.org:8443, gitlab.com");
    await enqueue(t, { repoUrl: "https://git.example.org:8443/team/repo.git" });
    await enqueue(t, { repoUrl: "https://gitlab.com/team/repo" });
    await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR }), "INVALID_ARGUMENT");
  });
});

describe("branch", () => {
  test("null and absent both mean the default branch; a name is kept", async () => {
    const t = makeT();
    const withNull = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, branch: null });
    const absent = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR });
    const named = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, branch: "release/1.2" });
    expect((await getJob(t, withNull.jobId))?.branch).toBeNull();
    expect((await getJob(t, absent.jobId))?.branch).toBeNull();
    expect((await getJob(t, named.jobId))?.branch).toBe("release/1.2");
  });
});

describe("dedupe", () => {
  test("returns the active job for the key instead of a second one", async () => {
    const t = makeT();
    const r1 = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, dedupeKey: "acme/widgets@main" });
    const r2 = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, dedupeKey: "acme/widgets@main" });
    expect(r1.created).toBe(true);
    expect(r2).toEqual({ jobId: r1.jobId, created: false });
    const other = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, dedupeKey: "other" });
    expect(other.created).toBe(true);
    const noKey = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR });
    expect(noKey.created).toBe(true);
    await expectAggregatesExact(t);
  });

  test("holds in every active state and ends with the job", async () => {
    const t = makeT();
    const key = { repoUrl: REPO, token: OPERATOR, dedupeKey: "k" };
    const { jobId } = await t.mutation(api.jobs.enqueue, key);
    const c = await claimOk(t); // claimed
    expect(await t.mutation(api.jobs.enqueue, key)).toEqual({ jobId, created: false });
    await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken }); // running
    expect(await t.mutation(api.jobs.enqueue, key)).toEqual({ jobId, created: false });
    await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId, leaseToken: c.leaseToken, error: "x", errorKind: "transient",
    }); // failed
    expect(await t.mutation(api.jobs.enqueue, key)).toEqual({ jobId, created: false });
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR }); // canceled: no longer active
    const fresh = await t.mutation(api.jobs.enqueue, key);
    expect(fresh.created).toBe(true);
    expect(fresh.jobId).not.toBe(jobId);
  });

  test("is per user", async () => {
    const t = makeT();
    const a = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, dedupeKey: "k", userId: "alice" });
    const b = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, dedupeKey: "k", userId: "bob" });
    expect(b.created).toBe(true);
    expect(b.jobId).not.toBe(a.jobId);
  });
});

describe("identity", () => {
  test("a signed-in user enqueues, reads and cancels their own jobs only", async () => {
    const t = makeT();
    const alice = t.withIdentity({ subject: "alice" });
    const bob = t.withIdentity({ subject: "bob" });
    const { jobId } = await alice.mutation(api.jobs.enqueue, { repoUrl: REPO, userId: "mallory" });
    const job = await alice.query(api.jobs.get, { jobId });
    expect(job!.userId).toBe("alice"); // userId argument ignored with an identity
    expect(await bob.query(api.jobs.get, { jobId })).toBeNull();
    expect(await bob.query(api.jobs.listByUser, { userId: "alice" })).toEqual([]);
    await expectCode(bob.mutation(api.jobs.cancel, { jobId }), "NOT_FOUND");
    expect((await alice.query(api.jobs.listByUser, {})).map((j) => j.jobId)).toEqual([jobId]);
    expect(await alice.mutation(api.jobs.cancel, { jobId })).toEqual({ status: "canceled" });
  });

  test("a wrong token is refused even with an identity", async () => {
    const t = makeT();
    const alice = t.withIdentity({ subject: "alice" });
    await expectCode(alice.mutation(api.jobs.enqueue, { repoUrl: REPO, token: "wrong" }), "UNAUTHORIZED");
  });

  test("neither identity nor token is UNAUTHORIZED", async () => {
    const t = makeT();
    const jobId = await enqueue(t);
    await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO }), "UNAUTHORIZED");
    await expectCode(t.mutation(api.jobs.cancel, { jobId }), "UNAUTHORIZED");
    await expectCode(t.query(api.jobs.get, { jobId }), "UNAUTHORIZED");
    await expectCode(t.query(api.jobs.listByUser, {}), "UNAUTHORIZED");
    await expectCode(t.query(api.docs.listByJob, { jobId }), "UNAUTHORIZED");
  });
});

test("get and listByUser never return secret fields", async () => {
  const t = makeT();
  const jobId = await enqueue(t, { githubToken: "ghp_supersecret", dedupeKey: "d", userId: "alice" });
  const c = await claimOk(t);
  const forbidden = ["leaseToken", "githubToken", "claimRequestId", "leaseGeneration", "hasSecret"];
  const one = await getJob(t, jobId);
  const list = await t.query(api.jobs.listByUser, { userId: "alice", token: OPERATOR });
  for (const view of [one, ...list]) {
    for (const key of forbidden) expect(Object.keys(view)).not.toContain(key);
    const text = JSON.stringify(view);
    expect(text).not.toContain("ghp_supersecret");
    expect(text).not.toContain(c.leaseToken);
  }
});

test("listByUser: newest first, bounded by limit", async () => {
  const t = makeT();
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push(await enqueue(t, { userId: "u1" }));
    vi.setSystemTime(Date.now() + 1000);
  }
  await enqueue(t, { userId: "u2" });
  const list = await t.query(api.jobs.listByUser, { userId: "u1", token: OPERATOR, limit: 3 });
  expect(list.map((j) => j.jobId)).toEqual(ids.slice(2).reverse());
  const operator = await t.query(api.jobs.listByUser, { token: OPERATOR });
  expect(operator).toEqual([]); // token without userId lists the "operator" user
  expect((await t.query(api.jobs.listByUser, { userId: "u1", token: OPERATOR, limit: 1e9 })).length).toBe(5);
});

test("get of a malformed or unknown id is null", async () => {
  const t = makeT();
  expect(await t.query(api.jobs.get, { jobId: "nope", token: OPERATOR })).toBeNull();
});

describe("worker token", () => {
  const workerCalls = (jobId: string, leaseToken: string, token: string | undefined) => ({
    claimOne: { fn: api.jobs.claimOne, args: { token, workerId: "w", leaseMs: 10_000, requestId: "r" } },
    start: { fn: api.jobs.start, args: { token, jobId, leaseToken } },
    heartbeat: { fn: api.jobs.heartbeat, args: { token, jobId, leaseToken, leaseMs: 10_000 } },
    uploadDocs: { fn: api.docs.uploadDocs, args: { token, jobId, leaseToken, runId: "r", docs: [] } },
    complete: {
      fn: api.jobs.complete,
      args: { token, jobId, leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 0 } },
    },
    retryOrFail: {
      fn: api.jobs.retryOrFail,
      args: { token, jobId, leaseToken, error: "e", errorKind: "transient" as const },
    },
    release: { fn: api.jobs.release, args: { token, jobId, leaseToken, reason: "r" } },
    acknowledgeCancel: { fn: api.jobs.acknowledgeCancel, args: { token, jobId, leaseToken } },
  });

  const cases: [string, string | undefined, string | undefined][] = [
    ["wrong token", "wrong-token", TOKEN],
    ["token with one char changed", `${TOKEN.slice(0, -1)}X`, TOKEN],
    ["token prefix", TOKEN.slice(0, 5), TOKEN],
    ["token plus suffix", `${TOKEN}x`, TOKEN],
    ["over-long token", TOKEN.repeat(500), TOKEN],
    ["missing token", undefined, TOKEN],
    ["empty token", "", TOKEN],
    ["WORKER_TOKEN unset", TOKEN, undefined],
    ["WORKER_TOKEN empty, empty token", "", ""],
  ];

  test.each(cases)("%s: every worker function is UNAUTHORIZED and changes nothing", async (_n, token, env) => {
    const t = makeT();
    const jobId = await enqueue(t);
    const c = await claimOk(t);
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR });
    const before = await t.run(async (ctx) => await ctx.db.query("jobs").collect());
    if (env === undefined) vi.stubEnv("WORKER_TOKEN", undefined as unknown as string);
    else vi.stubEnv("WORKER_TOKEN", env);
    for (const [name, { fn, args }] of Object.entries(workerCalls(jobId, c.leaseToken, token))) {
      const p = t.mutation(fn as typeof api.jobs.start, args as never);
      await expectCode(p, "UNAUTHORIZED").catch((e) => {
        throw new Error(`${name}: ${String(e)}`);
      });
    }
    await expectCode(t.query(api.metrics.queue, { token }), "UNAUTHORIZED");
    if (token !== undefined) {
      await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO, token }), "UNAUTHORIZED");
      await expectCode(t.query(api.jobs.get, { jobId, token }), "UNAUTHORIZED");
    }
    const after = await t.run(async (ctx) => await ctx.db.query("jobs").collect());
    expect(after).toEqual(before);
  });

  test("the refusal reveals nothing", async () => {
    const t = makeT();
    let message = "";
    try {
      await t.mutation(api.jobs.claimOne, { token: "nope", workerId: "w", leaseMs: 10_000, requestId: "r" });
    } catch (e) {
      message = JSON.stringify((e as { data: unknown }).data);
    }
    expect(message).toBe(JSON.stringify({ code: "UNAUTHORIZED", message: "unauthorized" }));
  });
});
