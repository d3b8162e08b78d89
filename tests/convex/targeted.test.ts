// Jobs targeted at one worker (targetWorkerId, operator only): the rollout's smoke job runs
// on its canary and nowhere else, and never holds up the other workers' jobs.
import { afterEach, beforeEach, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import { JOB_STATUSES } from "../../convex/lib/policy";
import {
  OPERATOR, REPO, TOKEN, advance, claim, claimOk, enqueue, expectAggregatesExact, expectCode, getJob, makeT, setupEnv, teardownEnv,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

async function enqueueFor(t: ReturnType<typeof makeT>, targetWorkerId: string, maxAttempts = 1) {
  const r = await t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, targetWorkerId, maxAttempts, userId: "rollout-smoke" });
  return r.jobId;
}

test("only the named worker claims a targeted job, ahead of older untargeted ones", async () => {
  const t = makeT();
  const older = await enqueue(t);
  advance(1_000);
  const smoke = await enqueueFor(t, "canary-1");
  advance(1_000);
  const other = await claimOk(t, "other-1");
  expect(other.jobId).toBe(older); // the targeted job is not another worker's
  expect(await claim(t, "other-2")).toBeNull();
  const mine = await claimOk(t, "canary-1");
  expect(mine.jobId).toBe(smoke);
  expect((await getJob(t, smoke)).targetWorkerId).toBe("canary-1");
  await expectAggregatesExact(t);
});

test("a targeted job at the head of the queue does not hold the others back", async () => {
  const t = makeT();
  await enqueueFor(t, "canary-1");
  advance(1_000);
  const later = await enqueue(t);
  advance(1_000);
  expect((await claimOk(t, "other-1")).jobId).toBe(later);
});

test("an expired lease of a targeted job goes back to its worker, not to another", async () => {
  const t = makeT();
  const smoke = await enqueueFor(t, "canary-1", 3);
  await claimOk(t, "canary-1", 10_000);
  advance(20_000);
  expect(await claim(t, "other-1")).toBeNull();
  expect((await getJob(t, smoke)).status).toBe("pending");
  expect((await claimOk(t, "canary-1")).jobId).toBe(smoke);
  await expectAggregatesExact(t);
});

test("with one attempt, an expired targeted job is dead (the rollout sees it fail)", async () => {
  const t = makeT();
  const smoke = await enqueueFor(t, "canary-1");
  await claimOk(t, "canary-1", 10_000);
  advance(20_000);
  expect(await claim(t, "other-1")).toBeNull();
  expect((await getJob(t, smoke)).status).toBe("dead");
});

test("targetWorkerId is an operator's: a signed-in user cannot target a worker", async () => {
  const t = makeT();
  await expectCode(
    t.withIdentity({ subject: "alice" }).mutation(api.jobs.enqueue, { repoUrl: REPO, targetWorkerId: "canary-1" }),
    "UNAUTHORIZED",
  );
  await expectCode(
    t.mutation(api.jobs.enqueue, { repoUrl: REPO, token: OPERATOR, targetWorkerId: "bad id with spaces" }),
    "INVALID_ARGUMENT",
  );
  expect(TOKEN).not.toBe(OPERATOR);
});

test("a targeted job that failed and retries later comes back to its worker only", async () => {
  const t = makeT();
  const smoke = await enqueueFor(t, "canary-1", 3);
  const c = await claimOk(t, "canary-1");
  await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId: c.jobId, leaseToken: c.leaseToken, error: "flaky", errorKind: "transient",
  });
  expect((await getJob(t, smoke)).status).toBe("failed");
  expect(await claim(t, "canary-1")).toBeNull(); // its back-off has not passed
  advance(30_000);
  expect(await claim(t, "other-1")).toBeNull();
  expect((await claimOk(t, "canary-1")).jobId).toBe(smoke);
});

test("the targeted lookup's one index range holds exactly the queued statuses", () => {
  // oldestTargeted reads statuses from "failed" to "pending" as strings.
  const inRange = JOB_STATUSES.filter((s) => s >= "failed" && s <= "pending").sort();
  expect(inRange).toEqual(["failed", "pending"]);
});
