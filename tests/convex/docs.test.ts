// Document upload (fenced, batched, bounded) and the atomic swap at complete.
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { api } from "../../convex/_generated/api";
import { MAX_DOCS_PER_CALL, MAX_DOC_BYTES } from "../../convex/lib/policy";
import {
  OPERATOR,
  TOKEN,
  advance,
  claimOk,
  enqueue,
  expectCode,
  getJob,
  makeT,
  setupEnv,
  teardownEnv,
  type T,
} from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

type Kind = "chapter" | "tutorial" | "toc" | "yaml" | "other";
function docs(n: number, prefix = "d", from = 0) {
  return Array.from({ length: n }, (_, i) => ({
    slug: `${prefix}-${from + i}`,
    title: `Doc ${from + i}`,
    kind: "chapter" as Kind,
    order: from + i,
    content: `# ${prefix} ${from + i}\n`,
  }));
}

async function allDocs(t: T) {
  return await t.run(async (ctx) => await ctx.db.query("docs").collect());
}

test("upload in batches, readers see nothing until complete, then exactly the run's set", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  expect(await t.mutation(api.docs.uploadDocs, { ...lease, runId: "run-1", docs: docs(50, "d", 0) })).toEqual({ stored: 50 });
  expect(await t.mutation(api.docs.uploadDocs, { ...lease, runId: "run-1", docs: docs(20, "d", 50) })).toEqual({ stored: 20 });
  expect(await t.query(api.docs.listByJob, { jobId, token: OPERATOR })).toEqual([]);
  expect(await t.query(api.docs.getDoc, { jobId, slug: "d-1", token: OPERATOR })).toBeNull();
  await t.mutation(api.jobs.complete, { ...lease, runId: "run-1", summary: { docsCount: 70, durationMs: 1 } });
  const list = await t.query(api.docs.listByJob, { jobId, token: OPERATOR });
  expect(list.map((d) => d.slug)).toEqual(docs(70).map((d) => d.slug));
  expect(await t.query(api.docs.getDoc, { jobId, slug: "d-3", token: OPERATOR })).toMatchObject({ content: "# d 3\n" });
});

test("re-uploading a slug in the same run replaces it (a retried call is harmless)", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  await t.mutation(api.docs.uploadDocs, { ...lease, runId: "r", docs: docs(3) });
  await t.mutation(api.docs.uploadDocs, { ...lease, runId: "r", docs: docs(3) });
  const changed = docs(1).map((d) => ({ ...d, content: "changed" }));
  await t.mutation(api.docs.uploadDocs, { ...lease, runId: "r", docs: changed });
  await t.mutation(api.jobs.complete, { ...lease, runId: "r", summary: { docsCount: 3, durationMs: 1 } });
  expect(await allDocs(t)).toHaveLength(3);
  expect(await t.query(api.docs.getDoc, { jobId, slug: "d-0", token: OPERATOR })).toMatchObject({ content: "changed" });
});

test("complete swaps in the winning run and deletes the earlier runs' partial sets", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  // attempt 1 uploads part of a set, then its lease expires
  const a = await claimOk(t, "w1", 10_000);
  await t.mutation(api.docs.uploadDocs, { token: TOKEN, jobId, leaseToken: a.leaseToken, runId: "attempt-1", docs: docs(10, "old") });
  advance(10_001);
  // attempt 2 uploads a full set and completes
  const b = await claimOk(t, "w2");
  await t.mutation(api.docs.uploadDocs, { token: TOKEN, jobId, leaseToken: b.leaseToken, runId: "attempt-2", docs: docs(4, "new") });
  expect(await allDocs(t)).toHaveLength(14);
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId, leaseToken: b.leaseToken, runId: "attempt-2", summary: { docsCount: 4, durationMs: 1 },
  });
  // readers see only the winning run at once; the leftovers go in a scheduled purge
  expect((await t.query(api.docs.listByJob, { jobId, token: OPERATOR })).map((d) => d.slug)).toEqual(
    docs(4, "new").map((d) => d.slug),
  );
  await t.finishAllScheduledFunctions(() => vi.runAllTimers());
  const remaining = await allDocs(t);
  expect(remaining.map((d) => d.runId)).toEqual(["attempt-2", "attempt-2", "attempt-2", "attempt-2"]);
  expect((await getJob(t, jobId)).result?.docsCount).toBe(4);
});

test("more stale documents than one batch are deleted by a scheduled continuation", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const a = await claimOk(t, "w1", 10_000);
  for (let i = 0; i < 5; i++) {
    await t.mutation(api.docs.uploadDocs, {
      token: TOKEN, jobId, leaseToken: a.leaseToken, runId: "stale", docs: docs(50, "s", i * 50),
    });
  }
  advance(10_001);
  const b = await claimOk(t, "w2");
  await t.mutation(api.docs.uploadDocs, { token: TOKEN, jobId, leaseToken: b.leaseToken, runId: "good", docs: docs(2) });
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId, leaseToken: b.leaseToken, runId: "good", summary: { docsCount: 2, durationMs: 1 },
  });
  expect((await allDocs(t)).length).toBeGreaterThan(2); // first batch done, the rest scheduled
  await t.finishAllScheduledFunctions(() => vi.runAllTimers());
  const left = await allDocs(t);
  expect(left.map((d) => d.runId)).toEqual(["good", "good"]);
  expect(await t.query(api.docs.listByJob, { jobId, token: OPERATOR })).toHaveLength(2);
});

test("a dead or canceled job keeps no staged documents", async () => {
  const t = makeT();
  const j1 = await enqueue(t);
  const c1 = await claimOk(t);
  await t.mutation(api.docs.uploadDocs, { token: TOKEN, jobId: j1, leaseToken: c1.leaseToken, runId: "r", docs: docs(3) });
  await t.mutation(api.jobs.retryOrFail, { token: TOKEN, jobId: j1, leaseToken: c1.leaseToken, error: "x", errorKind: "permanent" });
  const j2 = await enqueue(t);
  const c2 = await claimOk(t);
  await t.mutation(api.docs.uploadDocs, { token: TOKEN, jobId: j2, leaseToken: c2.leaseToken, runId: "r", docs: docs(3) });
  await t.mutation(api.jobs.cancel, { jobId: j2, token: OPERATOR });
  await t.mutation(api.jobs.acknowledgeCancel, { token: TOKEN, jobId: j2, leaseToken: c2.leaseToken });
  await t.finishAllScheduledFunctions(() => vi.runAllTimers());
  expect(await allDocs(t)).toEqual([]);
  expect(await t.run(async (ctx) => await ctx.db.query("docContents").collect())).toEqual([]);
});

test("complete refuses a docsCount that does not match the uploaded run", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  await t.mutation(api.docs.uploadDocs, { ...lease, runId: "r", docs: docs(3) });
  await expectCode(
    t.mutation(api.jobs.complete, { ...lease, runId: "r", summary: { docsCount: 4, durationMs: 1 } }),
    "INVALID_ARGUMENT",
  );
  await expectCode(
    t.mutation(api.jobs.complete, { ...lease, runId: "other", summary: { docsCount: 3, durationMs: 1 } }),
    "INVALID_ARGUMENT",
  );
  for (const summary of [
    { docsCount: -1, durationMs: 1 },
    { docsCount: 1.5, durationMs: 1 },
    { docsCount: 3, durationMs: -1 },
    { docsCount: 3, durationMs: 1, costUsd: Number.NaN },
  ]) {
    await expectCode(t.mutation(api.jobs.complete, { ...lease, runId: "r", summary }), "INVALID_ARGUMENT");
  }
  expect((await getJob(t, jobId)).status).toBe("claimed");
  await t.mutation(api.jobs.complete, { ...lease, runId: "r", summary: { docsCount: 3, durationMs: 1 } });
});

test("size and count limits", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken, runId: "r" };
  const bad: [string, ReturnType<typeof docs>][] = [
    ["too many in one call", docs(MAX_DOCS_PER_CALL + 1)],
    ["one document too large", [{ ...docs(1)[0], content: "x".repeat(MAX_DOC_BYTES + 1) }]],
    ["multi-byte content counted in bytes", [{ ...docs(1)[0], content: "é".repeat(MAX_DOC_BYTES / 2 + 1) }]],
    ["call too large", Array.from({ length: 6 }, (_, i) => ({ ...docs(1, "big", i)[0], content: "x".repeat(MAX_DOC_BYTES) }))],
    ["duplicate slug", [...docs(1), ...docs(1)]],
    ["bad slug", [{ ...docs(1)[0], slug: "a b" }]],
    ["empty slug", [{ ...docs(1)[0], slug: "" }]],
    ["long title", [{ ...docs(1)[0], title: "t".repeat(501) }]],
    ["NaN order", [{ ...docs(1)[0], order: Number.NaN }]],
  ];
  for (const [name, batch] of bad) {
    await expectCode(t.mutation(api.docs.uploadDocs, { ...lease, docs: batch }), "INVALID_ARGUMENT").catch((e) => {
      throw new Error(`${name}: ${String(e)}`);
    });
  }
  expect(await allDocs(t)).toEqual([]);
  // the largest allowed document fits
  await t.mutation(api.docs.uploadDocs, { ...lease, docs: [{ ...docs(1)[0], content: "x".repeat(MAX_DOC_BYTES) }] });
});

test("complete can carry the last batch: staged, counted and swapped in by one call", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  await t.mutation(api.docs.uploadDocs, { ...lease, runId: "run-1", docs: docs(50, "d", 0) });
  const complete = { ...lease, runId: "run-1", summary: { docsCount: 53, durationMs: 1 }, docs: docs(3, "d", 50) };
  await t.mutation(api.jobs.complete, complete);
  const list = await t.query(api.docs.listByJob, { jobId, token: OPERATOR });
  expect(list.map((d) => d.slug)).toEqual(docs(53).map((d) => d.slug));
  expect((await getJob(t, jobId)).status).toBe("completed");
  // its retry after a lost reply is the usual no-op
  await t.mutation(api.jobs.complete, complete);
  expect(await allDocs(t)).toHaveLength(53);
});

test("complete's batch is checked like uploadDocs; a wrong count stores nothing", async () => {
  const t = makeT();
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  await expectCode(
    t.mutation(api.jobs.complete, {
      ...lease, runId: "r", summary: { docsCount: 51, durationMs: 1 }, docs: docs(MAX_DOCS_PER_CALL + 1),
    }),
    "INVALID_ARGUMENT",
  );
  await expectCode(
    t.mutation(api.jobs.complete, { ...lease, runId: "r", summary: { docsCount: 4, durationMs: 1 }, docs: docs(3) }),
    "INVALID_ARGUMENT",
  );
  expect(await allDocs(t)).toEqual([]);
  expect((await getJob(t, jobId)).status).toBe("claimed");
});
