// The job state machine's data layer. Every status change goes through setStatus, which
// keeps the counters, queue buckets and stats buckets exact and removes secrets and stale
// documents when a job ends. Functions in jobs.ts/docs.ts stay thin on top of this.
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import { internal } from "../_generated/api";
import { recordEvent, transitionEvent } from "./aggregates";
import { kickDispatcher } from "./dispatcher";
import { fail } from "./errors";
import {
  DOC_PURGE_BATCH,
  DOC_PURGE_BYTES,
  RECLAIM_BATCH,
  constantTimeEqual,
  isAssigned,
  isLeased,
  isQueued,
  isTerminal,
  type JobStatus,
  type Outcome,
} from "./policy";

export type Job = Doc<"jobs">;
export type JobPatch = Partial<Omit<Job, "_id" | "_creationTime" | "status">>;

// Counters and buckets: see aggregates.ts (an event per transition, folded by the dispatcher).

// ---------------------------------------------------------------- jobs

export type NewJob = {
  repoUrl: string;
  branch?: string;
  userId: string;
  dedupeKey?: string;
  maxAttempts: number;
  githubToken?: string;
  targetWorkerId?: string;
};

export async function insertJob(ctx: MutationCtx, job: NewJob, now: number): Promise<Id<"jobs">> {
  const id = await ctx.db.insert("jobs", {
    repoUrl: job.repoUrl,
    branch: job.branch,
    userId: job.userId,
    hasSecret: job.githubToken !== undefined,
    status: "pending",
    runAt: now,
    attempts: 0,
    maxAttempts: job.maxAttempts,
    deferrals: 0,
    dedupeKey: job.dedupeKey,
    targetWorkerId: job.targetWorkerId,
    leaseGeneration: 0,
    cancelRequested: false,
    uploadCount: 0,
    createdAt: now,
    updatedAt: now,
  });
  if (job.githubToken !== undefined) {
    await ctx.db.insert("jobSecrets", { jobId: id, githubToken: job.githubToken });
  }
  await recordEvent(ctx, transitionEvent(now, undefined, "pending", undefined, now));
  await kickDispatcher(ctx, now, now);
  return id;
}

/**
 * Move a job to `next` and apply `patch`. Keeps counters and buckets exact. `failedAttempt`
 * records an attempt failure in the stats even when `next` is not "failed" (a lease that
 * expired and was re-claimed or returned to pending).
 */
export async function setStatus(
  ctx: MutationCtx,
  job: Job,
  next: JobStatus,
  patch: JobPatch,
  now: number,
  opts: { failedAttempt?: boolean } = {},
): Promise<Job> {
  const prev = job.status;
  const full: JobPatch & { status: JobStatus } = { ...patch, status: next, updatedAt: now };
  if ((isLeased(prev) || isAssigned(prev)) && !isLeased(next)) {
    full.claimRequestId = undefined;
    full.leaseUntil = undefined;
  }
  if (!isAssigned(next) && !isLeased(next)) full.assignedSlot = undefined;
  if (isTerminal(next)) {
    full.completedAt = now; // when the job ended, whatever the outcome
  }
  const nextRunAt = full.runAt ?? job.runAt;

  let outcome: Outcome | undefined;
  let durationMs: number | undefined;
  if (next === "completed") {
    outcome = "completed";
    durationMs = job.startedAt !== undefined ? now - job.startedAt : (full.result?.durationMs ?? 0);
  } else if (next === "failed" || opts.failedAttempt === true) {
    outcome = "failed";
  } else if (next === "dead" || next === "canceled") {
    outcome = next;
  }
  await recordEvent(
    ctx,
    transitionEvent(now, prev, next, job.runAt, nextRunAt, {
      outcome,
      durationMs,
      droppedDocs: next === "completed" ? (full.result?.dropped?.count ?? 0) : 0,
    }),
  );
  if (isQueued(next)) await kickDispatcher(ctx, nextRunAt, now);

  if (isTerminal(next)) {
    if (job.hasSecret) {
      await deleteSecrets(ctx, job._id);
      full.hasSecret = false;
    }
    // Documents go in scheduled batches (docs:purgeStale), never in this transaction: a
    // job's leftovers can be far larger than one transaction may read. Only when there are
    // any: a job completed by its only run leaves none (one call per job saved).
    const leftovers = next === "completed" ? job.staleRuns === true : job.uploadRunId !== undefined || job.staleRuns === true;
    if (leftovers) await ctx.scheduler.runAfter(0, internal.docs.purgeStale, { jobId: job._id });
  }
  await ctx.db.patch(job._id, full);
  return { ...job, ...full } as Job;
}

async function deleteSecrets(ctx: MutationCtx, jobId: Id<"jobs">): Promise<void> {
  const rows = await ctx.db
    .query("jobSecrets")
    .withIndex("by_job", (q) => q.eq("jobId", jobId))
    .take(10);
  for (const row of rows) await ctx.db.delete(row._id);
}

export async function githubTokenOf(ctx: QueryCtx, job: Job): Promise<string | undefined> {
  if (!job.hasSecret) return undefined;
  const row = await ctx.db
    .query("jobSecrets")
    .withIndex("by_job", (q) => q.eq("jobId", job._id))
    .first();
  return row?.githubToken;
}

/**
 * Delete a bounded batch of `jobId`'s documents that nobody can need: every run but the
 * visible one (docsRunId of a completed job) and the one its current holder is uploading.
 * A batch stops at DOC_PURGE_BATCH documents or DOC_PURGE_BYTES of content (each document's
 * size is in its metadata, read before its content is touched), so no transaction nears
 * Convex's read and write limits whatever was uploaded. When more remain it schedules
 * itself again. Returns how many documents it deleted.
 */
export async function purgeStaleDocs(ctx: MutationCtx, jobId: Id<"jobs">): Promise<number> {
  const job = await ctx.db.get(jobId);
  const keep = new Set<string>();
  if (job !== null) {
    if (job.status === "completed" && job.docsRunId !== undefined) keep.add(job.docsRunId);
    if (isLeased(job.status) && job.uploadRunId !== undefined) keep.add(job.uploadRunId);
  }
  // The index orders a job's documents by runId: walk the ranges between the kept runs.
  const bounds = [...keep].sort();
  const ranges: { after?: string; before?: string }[] = [];
  for (let i = 0; i <= bounds.length; i++) ranges.push({ after: bounds[i - 1], before: bounds[i] });

  let deleted = 0;
  let bytes = 0;
  let more = false;
  for (const range of ranges) {
    const rows = await ctx.db
      .query("docs")
      .withIndex("by_job_run_order", (q) => {
        const base = q.eq("jobId", jobId);
        if (range.after !== undefined && range.before !== undefined) {
          return base.gt("runId", range.after).lt("runId", range.before);
        }
        if (range.after !== undefined) return base.gt("runId", range.after);
        if (range.before !== undefined) return base.lt("runId", range.before);
        return base;
      })
      .take(DOC_PURGE_BATCH - deleted + 1);
    for (const row of rows) {
      // at least one document per batch, so a purge always progresses
      if (deleted >= DOC_PURGE_BATCH || (deleted > 0 && bytes + row.bytes > DOC_PURGE_BYTES)) {
        more = true;
        break;
      }
      const bodies = await ctx.db
        .query("docContents")
        .withIndex("by_doc", (q) => q.eq("docId", row._id))
        .take(2);
      for (const body of bodies) await ctx.db.delete(body._id);
      await ctx.db.delete(row._id);
      deleted++;
      bytes += row.bytes;
    }
    if (more) break;
  }
  if (more) await ctx.scheduler.runAfter(0, internal.docs.purgeStale, { jobId });
  return deleted;
}

// ---------------------------------------------------------------- lookups

export async function getJob(ctx: QueryCtx, jobId: string): Promise<Job | null> {
  const id = ctx.db.normalizeId("jobs", jobId);
  if (id === null) return null;
  return await ctx.db.get(id);
}

export async function requireJob(ctx: QueryCtx, jobId: string): Promise<Job> {
  const job = await getJob(ctx, jobId);
  if (job === null) fail("NOT_FOUND", "no such job");
  return job;
}

/**
 * The fencing check of every worker mutation after claim: the job must be claimed or
 * running and carry this exact lease token. A lease that expired but was not taken by
 * anyone else still belongs to its holder (the token is new on every claim, so a
 * re-claimed job refuses the old holder).
 */
export async function loadLeasedJob(ctx: QueryCtx, jobId: string, leaseToken: string): Promise<Job> {
  const job = await requireJob(ctx, jobId);
  if (
    !isLeased(job.status) ||
    job.leaseToken === undefined ||
    leaseToken.length > 256 ||
    !constantTimeEqual(job.leaseToken, leaseToken)
  ) {
    fail("LEASE_LOST", "lease lost");
  }
  return job;
}

/** The oldest queued job with runAt <= now (pending or failed), or null. */
export async function oldestReady(ctx: QueryCtx, now: number): Promise<Job | null> {
  const [p, f] = await Promise.all([
    ctx.db
      .query("jobs")
      .withIndex("by_status_runAt", (q) => q.eq("status", "pending").lte("runAt", now))
      .first(),
    ctx.db
      .query("jobs")
      .withIndex("by_status_runAt", (q) => q.eq("status", "failed").lte("runAt", now))
      .first(),
  ]);
  if (p === null) return f;
  if (f === null) return p;
  return f.runAt < p.runAt ? f : p;
}

/** The claimed/running job whose lease expired first (leaseUntil < now), or null. */
export async function oldestExpired(ctx: QueryCtx, now: number): Promise<Job | null> {
  const [c, r] = await Promise.all([
    ctx.db
      .query("jobs")
      .withIndex("by_status_leaseUntil", (q) => q.eq("status", "claimed").lt("leaseUntil", now))
      .first(),
    ctx.db
      .query("jobs")
      .withIndex("by_status_leaseUntil", (q) => q.eq("status", "running").lt("leaseUntil", now))
      .first(),
  ]);
  if (c === null) return r;
  if (r === null) return c;
  return (r.leaseUntil ?? 0) < (c.leaseUntil ?? 0) ? r : c;
}

/** Up to `limit` claimed/running jobs whose lease expired, oldest expiry first. */
export async function expiredLeases(ctx: QueryCtx, now: number, limit: number): Promise<Job[]> {
  const [c, r] = await Promise.all(
    (["claimed", "running"] as const).map((status) =>
      ctx.db
        .query("jobs")
        .withIndex("by_status_leaseUntil", (q) => q.eq("status", status).lt("leaseUntil", now))
        .take(limit),
    ),
  );
  return [...c, ...r].sort((a, b) => (a.leaseUntil ?? 0) - (b.leaseUntil ?? 0)).slice(0, limit);
}

/**
 * A job whose lease expired: canceled if a cancel was requested, dead when it has used all
 * its attempts. Returns the new status, or null when the job can run again.
 */
export async function settleExpired(
  ctx: MutationCtx,
  job: Job,
  now: number,
): Promise<"canceled" | "dead" | null> {
  const lastError = `lease expired (worker ${job.lockedBy ?? "unknown"})`;
  if (job.cancelRequested) {
    await setStatus(ctx, job, "canceled", { lastError, lastErrorKind: "lease_expired" }, now);
    return "canceled";
  }
  if (job.attempts >= job.maxAttempts) {
    await setStatus(ctx, job, "dead", { lastError, lastErrorKind: "lease_expired" }, now);
    return "dead";
  }
  return null;
}

/** What one expired lease became: back in the queue, dead at maxAttempts, or canceled. */
export type ReclaimOutcome = import("./policy").ReclaimOutcome;

/**
 * The reclaim pass shared by the `jobs:reclaimExpired` cron and `operator:reclaimNow`:
 * up to RECLAIM_BATCH claimed/running jobs whose lease expired before `now` go back to
 * pending (the attempt stays consumed), or become dead at maxAttempts, or canceled when a
 * cancel was requested. Returns what happened to each job, oldest expiry first.
 */
export async function reclaimExpiredLeases(
  ctx: MutationCtx,
  now: number,
): Promise<{ jobId: string; outcome: ReclaimOutcome }[]> {
  const batch = await expiredLeases(ctx, now, RECLAIM_BATCH);
  const done: { jobId: string; outcome: ReclaimOutcome }[] = [];
  for (const job of batch) {
    let outcome: ReclaimOutcome | null = await settleExpired(ctx, job, now);
    if (outcome === null) {
      await setStatus(
        ctx,
        job,
        "pending",
        {
          // Back where it became free again: ahead of jobs queued after its lease ran out.
          runAt: Math.min(job.leaseUntil ?? now, now),
          lastError: `lease expired (worker ${job.lockedBy ?? "unknown"})`,
          lastErrorKind: "lease_expired",
        },
        now,
        { failedAttempt: true },
      );
      outcome = "pending";
    }
    done.push({ jobId: job._id as string, outcome });
  }
  return done;
}

/** Outcome counts of a reclaim pass (the cron's reply). */
export function reclaimCounts(done: { outcome: ReclaimOutcome }[]): {
  moved: number;
  dead: number;
  canceled: number;
} {
  return {
    moved: done.filter((d) => d.outcome === "pending").length,
    dead: done.filter((d) => d.outcome === "dead").length,
    canceled: done.filter((d) => d.outcome === "canceled").length,
  };
}

// ---------------------------------------------------------------- views

export function publicJob(job: Job) {
  return {
    jobId: job._id as string,
    repoUrl: job.repoUrl,
    branch: job.branch ?? null,
    userId: job.userId,
    status: job.status,
    runAt: job.runAt,
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    deferrals: job.deferrals,
    lockedBy: job.lockedBy,
    leaseUntil: job.leaseUntil,
    dedupeKey: job.dedupeKey,
    targetWorkerId: job.targetWorkerId,
    lastError: job.lastError,
    lastErrorKind: job.lastErrorKind,
    requeues: job.requeues,
    progress: job.progress,
    result: job.result,
    cancelRequested: job.cancelRequested,
    createdAt: job.createdAt,
    startedAt: job.startedAt,
    completedAt: job.completedAt,
    updatedAt: job.updatedAt,
  };
}
