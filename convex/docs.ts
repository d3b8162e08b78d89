// Generated documents: the worker uploads a run's documents in batches (fenced), `complete`
// (jobs.ts) makes that run the job's visible set. Readers see only the visible set.
import { v } from "convex/values";
import { internalMutation, query } from "./_generated/server";
import { canSee, requireCaller } from "./lib/auth";
import { workerMutation } from "./lib/functions";
import { must } from "./lib/errors";
import { getJob, loadLeasedJob, purgeStaleDocs } from "./lib/model";
import { stageDocs } from "./lib/staging";
import { checkIdent } from "./lib/validation";
import { vDocInput, vDocKind } from "./lib/validators";

/**
 * Stage documents for run `runId` of the job the caller holds. Re-uploading a slug in the
 * same run replaces it (a retried call is harmless). A new runId starts a new staged set;
 * older staged sets are deleted when the job ends. `jobs:complete` can carry the last batch.
 */
export const uploadDocs = workerMutation({
  args: {
    jobId: v.string(),
    leaseToken: v.string(),
    runId: v.string(),
    docs: v.array(vDocInput),
  },
  returns: v.object({ stored: v.number() }),
  handler: async (ctx, args) => {
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    const runId = must(checkIdent("runId", args.runId));
    await stageDocs(ctx, job, runId, args.docs);
    return { stored: args.docs.length };
  },
});

const vDocMeta = v.object({
  slug: v.string(),
  title: v.string(),
  kind: vDocKind,
  order: v.number(),
  bytes: v.number(),
  hash: v.optional(v.string()),
});

/** The visible documents of a completed job (metadata only, in order; at most 200). */
export const listByJob = query({
  args: { jobId: v.string(), token: v.optional(v.string()) },
  returns: v.array(vDocMeta),
  handler: async (ctx, args) => {
    const caller = await requireCaller(ctx.auth, args.token, undefined);
    const job = await getJob(ctx, args.jobId);
    if (job === null || !canSee(caller, job.userId) || job.docsRunId === undefined) return [];
    const runId = job.docsRunId;
    const docs = await ctx.db
      .query("docs")
      .withIndex("by_job_run_order", (q) => q.eq("jobId", job._id).eq("runId", runId))
      .take(200);
    return docs.map((d) => ({
      slug: d.slug,
      title: d.title,
      kind: d.kind,
      order: d.order,
      bytes: d.bytes,
      ...(d.hash !== undefined ? { hash: d.hash } : {}),
    }));
  },
});

/** One visible document with its content, or null. */
export const getDoc = query({
  args: { jobId: v.string(), slug: v.string(), token: v.optional(v.string()) },
  returns: v.union(
    v.null(),
    v.object({ slug: v.string(), title: v.string(), kind: vDocKind, order: v.number(), content: v.string() }),
  ),
  handler: async (ctx, args) => {
    const caller = await requireCaller(ctx.auth, args.token, undefined);
    const job = await getJob(ctx, args.jobId);
    if (job === null || !canSee(caller, job.userId) || job.docsRunId === undefined) return null;
    const runId = job.docsRunId;
    const doc = await ctx.db
      .query("docs")
      .withIndex("by_job_run_slug", (q) => q.eq("jobId", job._id).eq("runId", runId).eq("slug", args.slug))
      .unique();
    if (doc === null) return null;
    const body = await ctx.db
      .query("docContents")
      .withIndex("by_doc", (q) => q.eq("docId", doc._id))
      .unique();
    const content = body?.content ?? doc.content ?? "";
    return { slug: doc.slug, title: doc.title, kind: doc.kind, order: doc.order, content };
  },
});

/**
 * Deletes a job's documents that no reader or uploader can need any more, a bounded batch
 * per transaction, rescheduling itself until none is left. Scheduled when a job ends, so
 * complete, dead and cancel never read documents themselves. `keepRunId` is ignored (kept
 * for calls scheduled by earlier releases): what to keep is read from the job when it runs.
 */
export const purgeStale = internalMutation({
  args: { jobId: v.id("jobs"), keepRunId: v.optional(v.string()) },
  returns: v.number(),
  handler: async (ctx, args) => {
    return await purgeStaleDocs(ctx, args.jobId);
  },
});
