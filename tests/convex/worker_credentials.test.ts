// One credential per worker (convex/credentials.ts, lib/auth.ts, lib/functions.ts): each
// worker's own credential, stored hashed and bound to its worker id. It claims, reports on
// and recovers only its own jobs; revoking it stops that worker alone, and its in-flight job
// comes back when the lease expires. The shared WORKER_TOKEN still works while Convex has it
// (the migration) and not once it is removed.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { sha256Hex } from "../../convex/lib/sha256";
import {
  OPERATOR,
  REPO,
  TOKEN,
  advance,
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

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
let drawn = 0;
/** A credential as the CLI and the deploy draw it: fwc_ and 43 base64url characters. */
function newSecret(): string {
  drawn += 1;
  const bytes = new Uint8Array(43);
  crypto.getRandomValues(bytes);
  return "fwc_" + Array.from(bytes, (b) => ALPHABET[b % 64]).join("");
}

async function issue(t: T, workerId: string, host?: string) {
  const secret = newSecret();
  const reply = await t.mutation(api.credentials.issue, {
    token: OPERATOR,
    workerId,
    secretHash: sha256Hex(secret),
    ...(host !== undefined ? { host } : {}),
  });
  return { secret, ...reply };
}

/** A claim as the worker makes it: offer its slot, a dispatcher tick, accept (withdrawn when empty). */
async function claimAs(t: T, token: string, workerId: string, leaseMs = 60_000) {
  const args = { token, workerId, leaseMs, requestId: newRequestId(), start: true };
  const first = await t.mutation(api.jobs.claimOne, args);
  if (first !== null) return first;
  await dispatch(t);
  const second = await t.mutation(api.jobs.claimOne, args);
  if (second === null) await t.mutation(api.jobs.withdraw, { token, workerId });
  return second;
}

async function claimedAs(t: T, token: string, workerId: string, leaseMs = 60_000) {
  const c = await claimAs(t, token, workerId, leaseMs);
  if (c === null) throw new Error("expected a claim");
  return c;
}

const heartbeat = (t: T, token: string, jobId: string, leaseToken: string) =>
  t.mutation(api.jobs.heartbeat, { token, jobId, leaseToken, leaseMs: 60_000 });

const complete = (t: T, token: string, jobId: string, leaseToken: string) =>
  t.mutation(api.jobs.complete, {
    token, jobId, leaseToken, runId: "run-1", summary: { docsCount: 0, durationMs: 5 },
  });

describe("issuing", () => {
  test("stores only the hash; list shows a fingerprint, never the secret", async () => {
    const t = makeT();
    const { secret, credential, created, replaced } = await issue(t, "web-1-1", "web-1");
    expect(created).toBe(true);
    expect(replaced).toBe(0);
    expect(credential).toMatchObject({ workerId: "web-1-1", host: "web-1", revokedAt: null });
    expect(credential.fingerprint).toBe(sha256Hex(secret).slice(0, 12));

    const rows = await t.run(async (ctx) => await ctx.db.query("workerCredentials").collect());
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain(secret);
    expect(JSON.stringify(rows)).not.toContain(secret.slice(4, 24));
    expect(rows[0].secretHash).toBe(sha256Hex(secret));

    const listed = await t.query(api.credentials.list, { token: OPERATOR });
    expect(listed).toEqual([credential]);
    expect(JSON.stringify(listed)).not.toContain(secret.slice(4, 24));
  });

  test("the same hash again changes nothing; a new one for the worker replaces the old", async () => {
    const t = makeT();
    const first = await issue(t, "w1");
    const again = await t.mutation(api.credentials.issue, {
      token: OPERATOR, workerId: "w1", secretHash: sha256Hex(first.secret),
    });
    expect(again).toEqual({ credential: first.credential, created: false, replaced: 0 });

    const second = await issue(t, "w1");
    expect(second.replaced).toBe(1);
    await expectCode(claimAs(t, first.secret, "w1"), "UNAUTHORIZED");
    await enqueue(t);
    expect(await claimAs(t, second.secret, "w1")).not.toBeNull();
    const active = await t.query(api.credentials.list, { token: OPERATOR, workerId: "w1" });
    expect(active.map((c) => c.credentialId)).toEqual([second.credential.credentialId]);
    const all = await t.query(api.credentials.list, { token: OPERATOR, workerId: "w1", includeRevoked: true });
    expect(all).toHaveLength(2);
  });

  test("a revoked hash, or one bound to another worker, is refused", async () => {
    const t = makeT();
    const a = await issue(t, "w1");
    await expectCode(
      t.mutation(api.credentials.issue, { token: OPERATOR, workerId: "w2", secretHash: sha256Hex(a.secret) }),
      "INVALID_STATE",
    );
    await t.mutation(api.credentials.revoke, { token: OPERATOR, workerId: "w1" });
    await expectCode(
      t.mutation(api.credentials.issue, { token: OPERATOR, workerId: "w1", secretHash: sha256Hex(a.secret) }),
      "INVALID_STATE",
    );
  });

  test("bad worker ids, hosts and hashes are refused", async () => {
    const t = makeT();
    const hash = sha256Hex(newSecret());
    for (const workerId of ["", "-w", "w 1", "x".repeat(129)]) {
      await expectCode(t.mutation(api.credentials.issue, { token: OPERATOR, workerId, secretHash: hash }), "INVALID_ARGUMENT");
    }
    await expectCode(
      t.mutation(api.credentials.issue, { token: OPERATOR, workerId: "w", secretHash: hash, host: "a b" }),
      "INVALID_ARGUMENT",
    );
    for (const secretHash of ["", "abc", hash.toUpperCase(), hash + "0"]) {
      await expectCode(t.mutation(api.credentials.issue, { token: OPERATOR, workerId: "w", secretHash }), "INVALID_ARGUMENT");
    }
  });

  test("issue, list and revoke take the operator token only", async () => {
    const t = makeT();
    const { secret } = await issue(t, "w1");
    const hash = sha256Hex(newSecret());
    for (const token of [secret, TOKEN, undefined, "wrong-token-0123456789"]) {
      await expectCode(t.mutation(api.credentials.issue, { token, workerId: "w9", secretHash: hash }), "UNAUTHORIZED");
      await expectCode(t.query(api.credentials.list, { token }), "UNAUTHORIZED");
      await expectCode(t.mutation(api.credentials.revoke, { token, workerId: "w1" }), "UNAUTHORIZED");
    }
    // and a worker credential never carries operator rights elsewhere either
    await expectCode(t.query(api.operator.listStuck, { token: secret }), "UNAUTHORIZED");
    await expectCode(t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: secret }), "UNAUTHORIZED");
  });
});

describe("a credential is bound to its worker id", () => {
  test("whoami names the worker; the shared token is `shared`", async () => {
    const t = makeT();
    const { secret, credential } = await issue(t, "web-1-2");
    expect(await t.query(api.credentials.whoami, { token: secret })).toEqual({
      kind: "credential", workerId: "web-1-2", credentialId: credential.credentialId,
    });
    expect(await t.query(api.credentials.whoami, { token: TOKEN })).toEqual({ kind: "shared" });
  });

  test("it claims under its own id only", async () => {
    const t = makeT();
    const a = await issue(t, "worker-a");
    await enqueue(t);
    await expectCode(claimAs(t, a.secret, "worker-b"), "UNAUTHORIZED");
    const c = await claimedAs(t, a.secret, "worker-a");
    expect((await getJob(t, c.jobId)).lockedBy).toBe("worker-a");
  });

  test("recoverWorker refuses other ids and recovers only its own jobs", async () => {
    const t = makeT();
    const a = await issue(t, "worker-a");
    const b = await issue(t, "worker-b");
    await enqueue(t);
    await enqueue(t);
    const ca = await claimedAs(t, a.secret, "worker-a");
    const cb = await claimedAs(t, b.secret, "worker-b");

    // a compromised host cannot push another worker's live job back to pending
    await expectCode(t.mutation(api.jobs.recoverWorker, { token: a.secret, workerId: "worker-b" }), "UNAUTHORIZED");
    expect((await getJob(t, cb.jobId)).status).toBe("running");

    expect(await t.mutation(api.jobs.recoverWorker, { token: a.secret, workerId: "worker-a" })).toEqual({
      moved: 1, dead: 0, canceled: 0,
    });
    expect((await getJob(t, ca.jobId)).status).toBe("pending");
    expect((await getJob(t, cb.jobId)).status).toBe("running");
    await expectAggregatesExact(t);
  });

  test("every lease-fenced call on another worker's job is LEASE_LOST, even with its lease token", async () => {
    const t = makeT();
    const a = await issue(t, "worker-a");
    const b = await issue(t, "worker-b");
    const jobId = await enqueue(t);
    const ca = await claimedAs(t, a.secret, "worker-a");
    expect(ca.jobId).toBe(jobId);
    await t.mutation(api.jobs.cancel, { jobId, token: OPERATOR }); // acknowledgeCancel is valid for a
    const before = await rawJob(t, jobId);
    const lt = ca.leaseToken;
    const doc = { slug: "intro", title: "Intro", kind: "chapter" as const, order: 1, content: "# Intro" };
    const calls = [
      () => t.mutation(api.jobs.start, { token: b.secret, jobId, leaseToken: lt }),
      () => heartbeat(t, b.secret, jobId, lt),
      () => t.mutation(api.docs.uploadDocs, { token: b.secret, jobId, leaseToken: lt, runId: "r", docs: [doc] }),
      () => complete(t, b.secret, jobId, lt),
      () => t.mutation(api.jobs.retryOrFail, { token: b.secret, jobId, leaseToken: lt, error: "x", errorKind: "permanent" }),
      () => t.mutation(api.jobs.release, { token: b.secret, jobId, leaseToken: lt, reason: "x" }),
      () => t.mutation(api.jobs.acknowledgeCancel, { token: b.secret, jobId, leaseToken: lt }),
    ];
    for (const call of calls) await expectCode(call(), "LEASE_LOST");
    expect(await rawJob(t, jobId)).toEqual(before);
    // reading it as its holder: only the holder
    expect(await t.query(api.jobs.get, { jobId, token: b.secret, leaseToken: lt })).toBeNull();
    expect((await t.query(api.jobs.get, { jobId, token: a.secret, leaseToken: lt }))?.jobId).toBe(jobId);
    // the holder's own calls still work
    expect((await heartbeat(t, a.secret, jobId, lt)).cancelRequested).toBe(true);
    await t.mutation(api.jobs.acknowledgeCancel, { token: a.secret, jobId, leaseToken: lt });
    expect((await getJob(t, jobId)).status).toBe("canceled");
  });

  test("malformed and unknown credentials are refused", async () => {
    const t = makeT();
    await enqueue(t);
    const { secret } = await issue(t, "w1");
    for (const token of [secret.slice(0, -1), secret + "A", "fwc_" + "A".repeat(43), secret.replace("fwc_", "fwc-")]) {
      await expectCode(claimAs(t, token, "w1"), "UNAUTHORIZED");
      await expectCode(t.query(api.credentials.whoami, { token }), "UNAUTHORIZED");
    }
  });
});

describe("revoking one worker", () => {
  test("withdraws its slots: a job assigned to it goes back at once, unspent", async () => {
    const t = makeT();
    const a = await issue(t, "web-1-1", "web-1");
    await t.mutation(api.jobs.claimOne, { token: a.secret, workerId: "web-1-1", leaseMs: 60_000, requestId: "offer" });
    const jobId = await enqueue(t);
    await dispatch(t);
    expect((await rawJob(t, jobId))!.status).toBe("assigned");
    await t.mutation(api.credentials.revoke, { token: OPERATOR, host: "web-1" });
    expect(await getJob(t, jobId)).toMatchObject({ status: "pending", attempts: 0 });
    expect(await t.run(async (ctx) => await ctx.db.query("workerSlots").collect())).toEqual([]);
  });

  test("stops that worker alone; its in-flight job returns at lease expiry and another worker runs it", async () => {
    const t = makeT();
    const a = await issue(t, "web-1-1", "web-1");
    const b = await issue(t, "web-2-1", "web-2");
    const first = await enqueue(t);
    const second = await enqueue(t);
    const ca = await claimedAs(t, a.secret, "web-1-1", 30_000);
    const cb = await claimedAs(t, b.secret, "web-2-1", 30_000);
    expect([ca.jobId, cb.jobId]).toEqual([first, second]);

    const { revoked } = await t.mutation(api.credentials.revoke, { token: OPERATOR, host: "web-1" });
    expect(revoked.map((c) => c.workerId)).toEqual(["web-1-1"]);
    expect(revoked[0].revokedAt).toBeGreaterThanOrEqual(Date.now());

    // the revoked worker: refused everywhere, its job untouched until the lease runs out
    await expectCode(heartbeat(t, a.secret, ca.jobId, ca.leaseToken), "UNAUTHORIZED");
    await expectCode(complete(t, a.secret, ca.jobId, ca.leaseToken), "UNAUTHORIZED");
    await expectCode(claimAs(t, a.secret, "web-1-1"), "UNAUTHORIZED");
    await expectCode(t.query(api.jobs.assignments, { token: a.secret, workerId: "web-1-1" }), "UNAUTHORIZED");
    await expectCode(t.query(api.metrics.queue, { token: a.secret }), "UNAUTHORIZED");
    expect((await getJob(t, ca.jobId)).status).toBe("running");

    // the other worker never notices
    await heartbeat(t, b.secret, cb.jobId, cb.leaseToken);
    await complete(t, b.secret, cb.jobId, cb.leaseToken);
    expect((await getJob(t, cb.jobId)).status).toBe("completed");
    // its slot still names the job it completed (its final call offered none here)
    expect(await t.query(api.jobs.assignments, { token: b.secret, workerId: "web-2-1" })).toEqual({
      slots: [{ slot: 0, state: "assigned", jobId: cb.jobId }],
    });

    // the lease expires: the reclaim cron puts the job back, attempt consumed
    advance(31_000); // past the lease (convex-test's transaction clock creeps ahead ~1 ms per commit)
    expect(await t.mutation(internal.jobs.reclaimExpired, {})).toEqual({ moved: 1, dead: 0, canceled: 0 });
    const back = await getJob(t, ca.jobId);
    expect(back).toMatchObject({ status: "pending", lastErrorKind: "lease_expired", attempts: 1 });
    expect(back.lastError).toContain("web-1-1");

    const again = await claimedAs(t, b.secret, "web-2-1");
    expect(again.jobId).toBe(ca.jobId);
    await complete(t, b.secret, again.jobId, again.leaseToken);
    expect((await getJob(t, ca.jobId)).status).toBe("completed");
    await expectAggregatesExact(t);
  });

  test("by worker id or credential id; repeating it changes nothing; one selector exactly", async () => {
    const t = makeT();
    const a = await issue(t, "w1", "h");
    const b = await issue(t, "w2", "h");
    const c = await issue(t, "w3", "other");
    expect((await t.mutation(api.credentials.revoke, { token: OPERATOR, workerId: "w1" })).revoked).toHaveLength(1);
    expect((await t.mutation(api.credentials.revoke, { token: OPERATOR, workerId: "w1" })).revoked).toEqual([]);
    const byId = await t.mutation(api.credentials.revoke, { token: OPERATOR, credentialId: b.credential.credentialId });
    expect(byId.revoked.map((r) => r.workerId)).toEqual(["w2"]);
    expect(await t.query(api.credentials.whoami, { token: c.secret })).toMatchObject({ workerId: "w3" });
    await expectCode(t.query(api.credentials.whoami, { token: a.secret }), "UNAUTHORIZED");
    await expectCode(t.mutation(api.credentials.revoke, { token: OPERATOR }), "INVALID_ARGUMENT");
    await expectCode(
      t.mutation(api.credentials.revoke, { token: OPERATOR, workerId: "w3", host: "other" }),
      "INVALID_ARGUMENT",
    );
    const listed = await t.query(api.credentials.list, { token: OPERATOR, host: "h", includeRevoked: true });
    expect(listed.every((r) => r.revokedAt !== null)).toBe(true);
    expect(await t.query(api.credentials.list, { token: OPERATOR })).toHaveLength(1);
  });
});

describe("the shared WORKER_TOKEN (migration)", () => {
  test("keeps its fleet-wide rights while Convex has it, and is refused once removed", async () => {
    const t = makeT();
    await enqueue(t);
    const c = await claimedAs(t, TOKEN, "any-worker");
    await heartbeat(t, TOKEN, c.jobId, c.leaseToken);

    vi.stubEnv("WORKER_TOKEN", "");
    await expectCode(heartbeat(t, TOKEN, c.jobId, c.leaseToken), "UNAUTHORIZED");
    await expectCode(t.query(api.credentials.whoami, { token: TOKEN }), "UNAUTHORIZED");
    // per-worker credentials do not depend on it
    const { secret } = await issue(t, "w1");
    expect(await t.query(api.credentials.whoami, { token: secret })).toMatchObject({ kind: "credential" });
    expect(drawn).toBeGreaterThan(0);
  });
});
