// Generated files the worker left out (summary.dropped): kept on the job, shown to its user,
// counted in the metrics windows, and validated.
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { api } from "../../convex/_generated/api";
import { TOKEN, claimOk, enqueue, expectCode, getJob, makeT, setupEnv, teardownEnv, type T } from "./helpers";

beforeEach(setupEnv);
afterEach(teardownEnv);

async function running(t: T) {
  const jobId = await enqueue(t, { userId: "ada" });
  const c = await claimOk(t);
  const lease = { token: TOKEN, jobId, leaseToken: c.leaseToken };
  await t.mutation(api.jobs.start, lease);
  return { jobId, lease };
}

describe("summary.dropped", () => {
  test("is kept on the job, visible to its user, and counted in the metrics", async () => {
    const t = makeT();
    const { jobId, lease } = await running(t);
    const dropped = {
      count: 4807,
      reasons: [
        { reason: "over_doc_cap" as const, count: 4800 },
        { reason: "symlink" as const, count: 5 },
        { reason: "too_large" as const, count: 2 },
      ],
    };
    await t.mutation(api.jobs.complete, { ...lease, runId: "r1", summary: { docsCount: 0, durationMs: 5, dropped } });
    expect((await getJob(t, jobId)).result?.dropped).toEqual(dropped);
    const asUser = await t.withIdentity({ subject: "ada" }).query(api.jobs.get, { jobId });
    expect(asUser?.result?.dropped).toEqual(dropped);

    const clean = await running(t);
    await t.mutation(api.jobs.complete, {
      ...clean.lease,
      runId: "r2",
      summary: { docsCount: 0, durationMs: 5, dropped: { count: 0, reasons: [] } },
    });
    expect((await getJob(t, clean.jobId)).result?.dropped).toBeUndefined();

    const m = await t.query(api.metrics.queue, { token: TOKEN });
    expect(m.lastHour.droppedDocs).toBe(4807);
    expect(m.lastHour.jobsWithDroppedDocs).toBe(1);
    expect(m.lastDay.droppedDocs).toBe(4807);
  });

  test.each([
    ["a count that is not the sum", { count: 3, reasons: [{ reason: "symlink" as const, count: 2 }] }],
    ["a reason twice", { count: 2, reasons: [{ reason: "symlink" as const, count: 1 }, { reason: "symlink" as const, count: 1 }] }],
    ["a fractional count", { count: 1.5, reasons: [{ reason: "symlink" as const, count: 1.5 }] }],
    ["a zero reason", { count: 0, reasons: [{ reason: "symlink" as const, count: 0 }] }],
  ])("refuses %s and leaves the job running", async (_name, dropped) => {
    const t = makeT();
    const { jobId, lease } = await running(t);
    await expectCode(
      t.mutation(api.jobs.complete, { ...lease, runId: "r", summary: { docsCount: 0, durationMs: 1, dropped } }),
      "INVALID_ARGUMENT",
    );
    expect((await getJob(t, jobId)).status).toBe("running");
  });
});
