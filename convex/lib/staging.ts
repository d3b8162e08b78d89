// Staging a run's documents: shared by docs:uploadDocs and jobs:complete (its last batch).
import type { Infer } from "convex/values";
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx } from "../_generated/server";
import { invalid, must } from "./errors";
import type { Job } from "./model";
import { MAX_CALL_BYTES, MAX_DOCS_PER_CALL, MAX_DOCS_PER_RUN, MAX_DOC_BYTES } from "./policy";
import { checkIdent, checkText, utf8Length } from "./validation";
import { sha256Hex } from "./sha256";
import type { vDocInput } from "./validators";

const MAX_TITLE_LENGTH = 500;

export type DocInput = Infer<typeof vDocInput>;

/** A document's content lives in docContents, apart from its metadata (listings read none). */
async function replaceContent(ctx: MutationCtx, docId: Id<"docs">, content: string): Promise<void> {
  const row = await ctx.db
    .query("docContents")
    .withIndex("by_doc", (q) => q.eq("docId", docId))
    .unique();
  if (row === null) await ctx.db.insert("docContents", { docId, content });
  else await ctx.db.patch(row._id, { content });
}

/**
 * Validate one batch (all or nothing) and stage it under `runId` for the job the caller
 * holds. Re-uploading a slug in the same run replaces it. Returns the job as patched.
 */
export async function stageDocs(
  ctx: MutationCtx,
  job: Job,
  runId: string,
  docs: DocInput[],
): Promise<Job> {
  if (docs.length > MAX_DOCS_PER_CALL) {
    invalid(`at most ${MAX_DOCS_PER_CALL} documents per call`);
  }
  const slugs = new Set<string>();
  let total = 0;
  const sizes: number[] = [];
  for (const doc of docs) {
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
  // The run's documents staged so far, read once (a run holds at most MAX_DOCS_PER_RUN):
  // a new run has none, and a retried batch finds its slugs here instead of one lookup each.
  const staged =
    count === 0
      ? new Map<string, Doc<"docs">>()
      : new Map(
          (
            await ctx.db
              .query("docs")
              .withIndex("by_job_run_order", (q) => q.eq("jobId", job._id).eq("runId", runId))
              .take(MAX_DOCS_PER_RUN)
          ).map((d) => [d.slug, d]),
        );
  for (let i = 0; i < docs.length; i++) {
    const doc = docs[i];
    const fields = {
      title: doc.title,
      kind: doc.kind,
      order: doc.order,
      bytes: sizes[i],
      hash: sha256Hex(doc.content),
      createdAt: now,
    };
    const existing = staged.get(doc.slug);
    if (existing !== undefined) {
      const { content: _legacy, ...meta } = existing;
      await ctx.db.replace(existing._id, { ...meta, ...fields });
      await replaceContent(ctx, existing._id, doc.content);
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
  const patch = {
    uploadRunId: runId,
    uploadCount: count,
    updatedAt: now,
    // a new run while another one's documents are staged: purge them when the job ends
    ...(job.uploadRunId !== undefined && job.uploadRunId !== runId ? { staleRuns: true } : {}),
  };
  await ctx.db.patch(job._id, patch);
  return { ...job, ...patch };
}
