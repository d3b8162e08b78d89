// Convex's per-transaction limits (16 MiB read and written, 32,000 documents read, 16,000
// written; convex-test enforces them with transactionLimits: true) hold at the size caps:
// documents of MAX_DOC_BYTES, far more of them than one transaction may read.
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { DOC_PURGE_BYTES, MAX_CALL_BYTES, MAX_DOC_BYTES } from "../../convex/lib/policy";
import { OPERATOR, TOKEN, advance, claimOk, enqueue, makeT, setupEnv, teardownEnv, type T } from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const PER_CALL = Math.floor(MAX_CALL_BYTES / MAX_DOC_BYTES); // documents at the cap per call
const BIG = 40; // 40 x 800 kB = 32 MB: twice what one transaction may read

function bigDocs(n: number, from: number, prefix = "big") {
  return Array.from({ length: n }, (_, i) => ({
    slug: `${prefix}-${from + i}`,
    title: `Big ${from + i}`,
    kind: "chapter" as const,
    order: from + i,
    content: String.fromCharCode(97 + ((from + i) % 26)).repeat(MAX_DOC_BYTES),
  }));
}

async function uploadBig(t: T, jobId: string, leaseToken: string, runId: string, n: number) {
  for (let from = 0; from < n; from += PER_CALL) {
    await t.mutation(api.docs.uploadDocs, {
      token: TOKEN, jobId, leaseToken, runId, docs: bigDocs(Math.min(PER_CALL, n - from), from),
    });
  }
}

const countDocs = (t: T) =>
  t.run(async (ctx) => ({
    docs: (await ctx.db.query("docs").collect()).length,
    contents: (await ctx.db.query("docContents").collect()).length,
  }));

test("a completed run of documents at the cap is listed, read and completed within the limits", async () => {
  const t = makeT(true);
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  await uploadBig(t, jobId, c.leaseToken, "run-1", BIG);
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId, leaseToken: c.leaseToken, runId: "run-1", summary: { docsCount: BIG, durationMs: 1 },
  });
  const list = await t.query(api.docs.listByJob, { jobId, token: OPERATOR });
  expect(list).toHaveLength(BIG);
  expect(list.every((d) => d.bytes === MAX_DOC_BYTES && /^[0-9a-f]{64}$/.test(d.hash ?? ""))).toBe(true);
  const one = await t.query(api.docs.getDoc, { jobId, slug: "big-7", token: OPERATOR });
  expect(one?.content).toBe("h".repeat(MAX_DOC_BYTES));
});

test("a stale set at the cap is purged in bounded batches after complete", async () => {
  const t = makeT(true);
  const jobId = await enqueue(t);
  const a = await claimOk(t, "w1", 10_000);
  await uploadBig(t, jobId, a.leaseToken, "attempt-1", BIG);
  advance(10_001);
  const b = await claimOk(t, "w2");
  await uploadBig(t, jobId, b.leaseToken, "attempt-2", 2);
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId, leaseToken: b.leaseToken, runId: "attempt-2", summary: { docsCount: 2, durationMs: 1 },
  });
  // one batch deletes at most DOC_PURGE_BYTES of content
  const first = await t.mutation(internal.docs.purgeStale, { jobId: jobId as never });
  expect(first).toBe(Math.floor(DOC_PURGE_BYTES / MAX_DOC_BYTES));
  await t.finishAllScheduledFunctions(() => vi.runAllTimers());
  expect(await countDocs(t)).toEqual({ docs: 2, contents: 2 });
  expect((await t.query(api.docs.listByJob, { jobId, token: OPERATOR })).map((d) => d.slug)).toEqual(["big-0", "big-1"]);
});

test("reclaiming many expired jobs holding documents at the cap stays within the limits", async () => {
  const t = makeT(true);
  const jobs = 12; // 12 x 2 x 800 kB = 19 MB of staged documents
  for (let i = 0; i < jobs; i++) {
    const jobId = await enqueue(t, { maxAttempts: 1 });
    const c = await claimOk(t, `w${i}`, 1_000);
    await uploadBig(t, jobId, c.leaseToken, "r", 2);
  }
  advance(2_000);
  const reclaimed = await t.mutation(api.operator.reclaimNow, { token: OPERATOR });
  expect(reclaimed.dead).toBe(jobs);
  await t.finishAllScheduledFunctions(() => vi.runAllTimers());
  expect(await countDocs(t)).toEqual({ docs: 0, contents: 0 });
});
