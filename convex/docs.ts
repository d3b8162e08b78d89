// Generated documents: the worker uploads a run's documents in batches (fenced), `complete`
// (jobs.ts) makes that run the job's visible set. Readers see only the visible set.
import { v } from "convex/values";
import { internalMutation, mutation, query, type MutationCtx } from "./_generated/server";
import type { Id } from "./_generated/dataModel";
import { sha256Hex } from "./lib/sha256";
import { canSee, requireCaller, requireWorker } from "./lib/auth";
import { invalid, must } from "./lib/errors";
import { getJob, loadLeasedJob, purgeStaleDocs } from "./lib/model";
import {
  MAX_CALL_BYTES,
  MAX_DOCS_PER_CALL,
  MAX_DOCS_PER_RUN,
  MAX_DOC_BYTES,
} from "./lib/policy";
import { checkIdent, checkText, utf8Length } from "./lib/validation";
import { vDocInput, vDocKind } from "./lib/validators";

const MAX_TITLE_LENGTH = 500;

async function putContent(ctx: MutationCtx, docId: Id<"docs">, content: string): Promise<void> {
  const row = await ctx.db
    .query("docContents")
    .withIndex("by_doc", (q) => q.eq("docId", docId))
    .unique();
  if (row === null) await ctx.db.insert("docContents", { docId, content });
  else await ctx.db.patch(row._id, { content });
}

/**
 * Stage documents for run `runId` of the job the caller holds. Re-uploading a slug in the
 * same run replaces it (a retried call is harmless). A new runId starts a new staged set;
 * older staged sets are deleted when the job ends.
 */
export const uploadDocs = mutation({
  args: {
    token: v.optional(v.string()),
    jobId: v.string(),
    leaseToken: v.string(),
    runId: v.string(),
    docs: v.array(vDocInput),
  },
  returns: v.object({ stored: v.number() }),
  handler: async (ctx, args) => {
    requireWorker(args.token);
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    const runId = must(checkIdent("runId", args.runId));
    if (args.docs.length > MAX_DOCS_PER_CALL) {
      invalid(`at most ${MAX_DOCS_PER_CALL} documents per call`);
    }
    const slugs = new Set<string>();
    let total = 0;
    const sizes: number[] = [];
    for (const doc of args.docs) {
      must(checkIdent("slug", doc.slug));
      must(checkText("title", doc.title, MAX_TITLE_LENGTH));
      if (slugs.has(doc.slug)) invalid(`slug ${doc.slug} appears twice`);
      slugs.add(doc.slug);
      if (!Number.isFinite(doc.order)) invalid("order must be a finite number");
      const bytes = utf8Length(doc.content);
      if (bytes > MAX_DOC_BYTES) invalid(`document ${doc.slug} is larger than ${MAX_DOC_BYTES} bytes`);
      total += bytes;
      sizes.push(bytes);
    }
    if (total > MAX_CALL_BYTES) invalid(`a call carries at most ${MAX_CALL_BYTES} bytes`);

    const now = Date.now();
    let count = job.uploadRunId === runId ? job.uploadCount : 0;
    for (let i = 0; i < args.docs.length; i++) {
      const doc = args.docs[i];
      const fields = {
        title: doc.title,
        kind: doc.kind,
        order: doc.order,
        bytes: sizes[i],
        hash: sha256Hex(doc.content),
        createdAt: now,
      };
      const existing = await ctx.db
        .query("docs")
        .withIndex("by_job_run_slug", (q) =>
          q.eq("jobId", job._id).eq("runId", runId).eq("slug", doc.slug),
        )
        .unique();
      if (existing !== null) {
        const { content: _legacy, ...meta } = existing;
        await ctx.db.replace(existing._id, { ...meta, ...fields });
        await putContent(ctx, existing._id, doc.content);
      } else {
        count++;
        if (count > MAX_DOCS_PER_RUN) invalid(`a run stores at most ${MAX_DOCS_PER_RUN} documents`);
        const docId = await ctx.db.insert("docs", {
          jobId: job._id,
          runId,
          repoUrl: job.repoUrl,
          slug: doc.slug,
          ...fields,
        });
        await ctx.db.insert("docContents", { docId, content: doc.content });
      }
    }
    await ctx.db.patch(job._id, { uploadRunId: runId, uploadCount: count, updatedAt: now });
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
