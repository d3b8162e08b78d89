// claimOne: ordering, readiness, repeated request ids.
import { afterEach, beforeEach, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import {
  T0,
  TOKEN,
  advance,
  claim,
  claimOk,
  dispatch,
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

test("a repeated requestId returns the same claim and claims nothing else", async () => {
  const t = makeT();
  const first = await enqueue(t);
  advance(10);
  const second = await enqueue(t);
  const c1 = await claim(t, "w1", 60_000, "request-42");
  advance(20_000);
  const c2 = await claim(t, "w1", 60_000, "request-42");
  expect(c1).not.toBeNull();
  expect({ ...c2, leaseUntil: 0 }).toEqual({ ...c1, leaseUntil: 0 });
  // Renewed from the repeated request, so a worker counting from its later send is safe.
  expect(c2!.leaseUntil).toBeGreaterThanOrEqual(Date.now() - 5 + 60_000);
  expect((await getJob(t, first)).leaseUntil).toBe(c2!.leaseUntil);
  expect(c1!.jobId).toBe(first);
  expect((await getJob(t, second)).status).toBe("pending");
  expect((await getJob(t, first)).attempts).toBe(1);
  const c3 = await claim(t, "w1", 60_000, "request-43");
  expect(c3!.jobId).toBe(second);
  await expectAggregatesExact(t);
});

test("a repeated requestId after the job started still returns the same lease", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c1 = await claim(t, "w1", 60_000, "r-1");
  await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c1!.leaseToken });
  const again = await claim(t, "w1", 60_000, "r-1");
  expect({ ...again, leaseUntil: 0 }).toEqual({ ...c1, leaseUntil: 0 });
  expect(again!.leaseUntil).toBeGreaterThanOrEqual(c1!.leaseUntil);
  expect((await getJob(t, jobId)).status).toBe("running");
});

test("a repeated requestId whose lease expired unclaimed renews the same lease", async () => {
  const t = makeT();
  await enqueue(t);
  const c1 = await claim(t, "w1", 5_000, "r-1");
  advance(6_000);
  const c2 = await claim(t, "w1", 5_000, "r-1");
  expect(c2!.leaseToken).toBe(c1!.leaseToken);
  expect(c2!.attempt).toBe(1);
  expect(c2!.leaseUntil).toBeGreaterThan(Date.now());
});

test("a requestId is only honoured for the worker that made it", async () => {
  const t = makeT();
  await enqueue(t);
  await enqueue(t);
  const c1 = await claim(t, "w1", 60_000, "shared");
  const c2 = await claim(t, "w2", 60_000, "shared");
  expect(c2!.jobId).not.toBe(c1!.jobId);
});

test("a requestId reused after the job was re-claimed by someone else claims afresh", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c1 = await claim(t, "w1", 5_000, "r-1");
  advance(6_000);
  const other = await claim(t, "w2", 60_000, "r-2");
  expect(other!.jobId).toBe(jobId);
  expect(await claim(t, "w1", 60_000, "r-1")).toBeNull();
  expect(c1!.leaseToken).not.toBe(other!.leaseToken);
});

test("oldest ready first: by runAt across pending, failed and expired leases", async () => {
  const t = makeT();
  const a = await enqueue(t);
  advance(1_000);
  const b = await enqueue(t);
  advance(1_000);
  const c = await enqueue(t);
  // a fails (runAt in the future), b is claimed and its lease expires, c waits
  const ca = await claimOk(t);
  expect(ca.jobId).toBe(a);
  const r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId: a, leaseToken: ca.leaseToken, error: "x", errorKind: "transient",
  });
  const cb = await claimOk(t, "w1", 1_000);
  expect(cb.jobId).toBe(b);
  advance(1_500); // b's lease expired at a time later than c's runAt
  expect((await claimOk(t, "w2")).jobId).toBe(c);
  expect((await claimOk(t, "w2")).jobId).toBe(b); // expired lease
  expect(await claim(t, "w2")).toBeNull(); // a waits for its backoff
  advance(r.runAt! - Date.now());
  expect((await claimOk(t, "w2")).jobId).toBe(a);
});

test("an expired lease older than a ready job is taken first", async () => {
  const t = makeT();
  const a = await enqueue(t);
  await claimOk(t, "w1", 1_000);
  advance(5_000);
  await enqueue(t);
  const c = await claimOk(t, "w2");
  expect(c).toMatchObject({ jobId: a, attempt: 2 });
});

test("leaseMs, workerId and requestId are validated", async () => {
  const t = makeT();
  await enqueue(t);
  for (const leaseMs of [0, 500, Number.NaN, Number.POSITIVE_INFINITY, 7 * 3_600_000]) {
    await expectCode(
      t.mutation(api.jobs.claimOne, { token: TOKEN, workerId: "w", leaseMs, requestId: "r" }),
      "INVALID_ARGUMENT",
    );
  }
  for (const [workerId, requestId] of [["", "r"], ["w", ""], ["w w", "r"], ["w", "r\n"], ["w".repeat(201), "r"]]) {
    await expectCode(
      t.mutation(api.jobs.claimOne, { token: TOKEN, workerId, leaseMs: 10_000, requestId }),
      "INVALID_ARGUMENT",
    );
  }
  expect((await getJob(t, (await claimOk(t)).jobId)).attempts).toBe(1);
});

test("the github token is returned to the claimer only", async () => {
  const t = makeT();
  const jobId = await enqueue(t, { githubToken: "ghp_abc123" });
  const c = await claimOk(t);
  expect(c.githubToken).toBe("ghp_abc123");
  const pub = await getJob(t, jobId);
  expect(JSON.stringify(pub)).not.toContain("ghp_abc123");
  expect(JSON.stringify(pub)).not.toContain(c.leaseToken);
});

test("claimOne with start goes straight to running (no jobs:start call needed)", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const args = { token: TOKEN, workerId: "w1", leaseMs: 60_000, requestId: "r-start", start: true };
  expect(await t.mutation(api.jobs.claimOne, args)).toBeNull(); // offers slot 0
  await dispatch(t);
  const c = await t.mutation(api.jobs.claimOne, args);
  expect(c!.jobId).toBe(jobId);
  const job = await getJob(t, jobId);
  expect(job.status).toBe("running");
  expect(job.startedAt).toBeGreaterThanOrEqual(T0);
  expect(job.attempts).toBe(1);
  // start stays a harmless no-op for workers that still call it
  await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c!.leaseToken });
  expect((await getJob(t, jobId)).startedAt).toBe(job.startedAt);
  await expectAggregatesExact(t);
});
