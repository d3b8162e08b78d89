// Backoff bounds over many attempts; retries that consume no attempt stay bounded.
import { afterEach, beforeEach, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import {
  BACKOFF_BASE_MS,
  BACKOFF_CAP_MS,
  MAX_DEFERRALS,
  MAX_RETRY_AFTER_MS,
} from "../../convex/lib/policy";
import {
  TOKEN,
  advance,
  claim,
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

test("transient failures back off within [0.5, 1.5] x base*2^(n-1), capped at 10 min, then dead", async () => {
  const t = makeT();
  const delays: number[][] = [];
  for (let j = 0; j < 12; j++) {
    const jobId = await enqueue(t, { maxAttempts: 10 });
    const seen: number[] = [];
    for (let attempt = 1; attempt <= 10; attempt++) {
      const c = await claimOk(t);
      expect(c).toMatchObject({ jobId, attempt });
      await t.mutation(api.jobs.start, { token: TOKEN, jobId, leaseToken: c.leaseToken });
      const now = Date.now();
      const r = await t.mutation(api.jobs.retryOrFail, {
        token: TOKEN, jobId, leaseToken: c.leaseToken, error: `try ${attempt}`, errorKind: "transient",
      });
      if (attempt === 10) {
        expect(r).toEqual({ status: "dead" });
        break;
      }
      expect(r.status).toBe("failed");
      const delay = r.runAt! - now;
      const nominal = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
      expect(delay).toBeGreaterThanOrEqual(nominal * 0.5 - 5);
      expect(delay).toBeLessThanOrEqual(Math.min(BACKOFF_CAP_MS, nominal * 1.5) + 5);
      seen.push(delay);
      advance(r.runAt! - Date.now());
    }
    delays.push(seen);
    const job = await getJob(t, jobId);
    expect(job).toMatchObject({ status: "dead", attempts: 10 });
  }
  // jitter really varies the delays
  expect(new Set(delays.map((d) => d[0])).size).toBeGreaterThan(1);
  // the late attempts sit at the cap region
  for (const d of delays) expect(d[8]).toBeGreaterThanOrEqual(BACKOFF_CAP_MS / 2 - 5);
  await expectAggregatesExact(t);
});

test("deferrals give the attempt back but are bounded: dead after MAX_DEFERRALS", async () => {
  const t = makeT();
  const jobId = await enqueue(t, { maxAttempts: 2 });
  const kinds = ["auth", "usage_limit", "disk", "shutdown"] as const;
  for (let i = 1; i <= MAX_DEFERRALS + 1; i++) {
    const c = await claimOk(t);
    expect(c.attempt).toBe(1); // never consumed
    const now = Date.now();
    const r = await t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId, leaseToken: c.leaseToken, error: "limited", errorKind: kinds[i % kinds.length],
    });
    if (i <= MAX_DEFERRALS) {
      expect(r.status).toBe("pending");
      // without retryAfterMs: backoff by the number of deferrals, within the same bounds
      expect(r.runAt! - now).toBeGreaterThanOrEqual(BACKOFF_BASE_MS / 2 - 5);
      expect(r.runAt! - now).toBeLessThanOrEqual(BACKOFF_CAP_MS + 5);
      expect(await getJob(t, jobId)).toMatchObject({ attempts: 0, deferrals: i });
      advance(r.runAt! - Date.now());
    } else {
      expect(r).toEqual({ status: "dead" });
    }
  }
  expect(await getJob(t, jobId)).toMatchObject({ status: "dead", deferrals: MAX_DEFERRALS + 1 });
  expect(await claim(t)).toBeNull();
  await expectAggregatesExact(t);
});

test("releases count toward the same bound", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  for (let i = 1; i <= MAX_DEFERRALS + 1; i++) {
    const c = await claimOk(t);
    await t.mutation(api.jobs.release, { token: TOKEN, jobId, leaseToken: c.leaseToken, reason: "restart" });
  }
  expect(await getJob(t, jobId)).toMatchObject({ status: "dead", attempts: 0 });
  await expectAggregatesExact(t);
});

test("retryAfterMs sets runAt; it is clamped to 24 h; a negative value is refused", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  let c = await claimOk(t);
  let now = Date.now();
  let r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId, leaseToken: c.leaseToken, error: "reset at 5pm", errorKind: "usage_limit", retryAfterMs: 3 * 3_600_000,
  });
  expect(r.runAt! - now).toBeGreaterThanOrEqual(3 * 3_600_000);
  expect(r.runAt! - now).toBeLessThanOrEqual(3 * 3_600_000 + 5);
  advance(3 * 3_600_000 + 10);
  c = await claimOk(t);
  now = Date.now();
  r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId, leaseToken: c.leaseToken, error: "weekly", errorKind: "usage_limit", retryAfterMs: 30 * 86_400_000,
  });
  expect(r.runAt! - now).toBeLessThanOrEqual(MAX_RETRY_AFTER_MS + 5);
  advance(MAX_RETRY_AFTER_MS + 10);
  c = await claimOk(t);
  for (const retryAfterMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
    await expectCode(
      t.mutation(api.jobs.retryOrFail, {
        token: TOKEN, jobId, leaseToken: c.leaseToken, error: "x", errorKind: "usage_limit", retryAfterMs,
      }),
      "INVALID_ARGUMENT",
    );
  }
  // retryAfterMs does not turn a consuming kind into a deferral
  r = await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId, leaseToken: c.leaseToken, error: "x", errorKind: "transient", retryAfterMs: 1000,
  });
  expect(r.status).toBe("failed");
});

test("an unknown error kind is refused by the validator and changes nothing", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  await expect(
    t.mutation(api.jobs.retryOrFail, {
      token: TOKEN, jobId, leaseToken: c.leaseToken, error: "x", errorKind: "bogus" as "transient",
    }),
  ).rejects.toThrow();
  expect((await getJob(t, jobId)).status).toBe("claimed");
});

test("long error messages are truncated, not refused", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  await t.mutation(api.jobs.retryOrFail, {
    token: TOKEN, jobId, leaseToken: c.leaseToken, error: "e".repeat(100_000), errorKind: "transient",
  });
  expect((await getJob(t, jobId)).lastError!.length).toBeLessThanOrEqual(4_000);
});
