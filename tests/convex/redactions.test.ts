// The worker's record of secrets it masked in generated documents (summary.redactions):
// stored with the result, visible to the job's user, validated, never holding a secret.
import { afterEach, beforeEach, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import { OPERATOR, TOKEN, claimOk, enqueue, expectCode, makeT, setupEnv, teardownEnv, type T } from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

const DOCS = ["intro", "chapter-1"].map((slug, order) => ({
  slug,
  title: slug,
  kind: "chapter" as const,
  order,
  content: `# ${slug}\n\nThe key was [REDACTED].\n`,
}));

async function uploaded(t: T) {
  const jobId = await enqueue(t);
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  await t.mutation(api.docs.uploadDocs, { ...lease, runId: "run-1", docs: DOCS });
  return { jobId, lease };
}

test("complete stores the redaction record; jobs:get shows which doc and how many", async () => {
  const t = makeT();
  const { jobId, lease } = await uploaded(t);
  const redactions = [{ slug: "chapter-1", count: 3 }];
  await t.mutation(api.jobs.complete, {
    ...lease,
    runId: "run-1",
    summary: { docsCount: 2, durationMs: 5, redactions },
  });
  const job = await t.query(api.jobs.get, { jobId, token: OPERATOR });
  expect(job?.status).toBe("completed");
  expect(job?.result).toEqual({ docsCount: 2, durationMs: 5, redactions });
});

test("no redaction, no field: an empty list is not stored", async () => {
  const t = makeT();
  const { jobId, lease } = await uploaded(t);
  await t.mutation(api.jobs.complete, {
    ...lease,
    runId: "run-1",
    summary: { docsCount: 2, durationMs: 5, redactions: [] },
  });
  const job = await t.query(api.jobs.get, { jobId, token: OPERATOR });
  expect(job?.result).toEqual({ docsCount: 2, durationMs: 5 });
});

test.each([
  ["a zero count", [{ slug: "intro", count: 0 }]],
  ["a fractional count", [{ slug: "intro", count: 1.5 }]],
  ["a slug listed twice", [{ slug: "intro", count: 1 }, { slug: "intro", count: 2 }]],
  ["a slug with spaces", [{ slug: "a b", count: 1 }]],
  ["more entries than docs", [1, 2, 3].map((i) => ({ slug: `d-${i}`, count: 1 }))],
])("complete refuses %s in summary.redactions and the job stays running", async (_name, redactions) => {
  const t = makeT();
  const { jobId, lease } = await uploaded(t);
  await expectCode(
    t.mutation(api.jobs.complete, { ...lease, runId: "run-1", summary: { docsCount: 2, durationMs: 5, redactions } }),
    "INVALID_ARGUMENT",
  );
  const job = await t.query(api.jobs.get, { jobId, token: OPERATOR });
  expect(job?.status).not.toBe("completed");
  expect(job?.result).toBeUndefined();
});
