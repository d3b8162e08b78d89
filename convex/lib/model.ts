// The job state machine's data layer. Every status change goes through setStatus, which
// keeps the counters, queue buckets and stats buckets exact and removes secrets and stale
// documents when a job ends. Functions in jobs.ts/docs.ts stay thin on top of this.
import type { Doc, Id } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import { internal } from "../_generated/api";
import { fail } from "./errors";
import {
  DOC_PURGE_BATCH,
  DOC_PURGE_BYTES,
  HISTOGRAM_SIZE,
  QUEUE_BUCKET_MS,
  RECLAIM_BATCH,
  STATS_BUCKET_MS,
  constantTimeEqual,
  histogramIndex,
  isLeased,
  isQueued,
  isTerminal,
  type JobStatus,
} from "./policy";

export type Job = Doc<"jobs">;
export type JobPatch = Partial<Omit<Job, "_id" | "_creationTime" | "status">>;

// ---------------------------------------------------------------- counters and buckets

export function statusKey(status: JobStatus): string {
  return `status:${status}`;
}

export async function readCounter(ctx: QueryCtx, key: string): Promise<number> {
  const row = await ctx.db
    .query("counters")
    .withIndex("by_key", (q) => q.eq("key", key))
    .unique();
  return row?.value ?? 0;
}

async function bumpCounter(ctx: MutationCtx, key: string, delta: number): Promise<void> {
  const row = await ctx.db
    .query("counters")
    .withIndex("by_key", (q) => q.eq("key", key))
    .unique();
  if (row === null) {
    await ctx.db.insert("counters", { key, value: delta });
  } else {
    await ctx.db.patch(row._id, { value: row.value + delta });
  }
}

export function queueMinute(runAt: number): number {
  return Math.floor(runAt / QUEUE_BUCKET_MS) * QUEUE_BUCKET_MS;
}

async function bumpQueueBucket(ctx: MutationCtx, runAt: number, delta: number): Promise<void> {
  const minute = queueMinute(runAt);
  const row = await ctx.db
    .query("queueBuckets")
    .withIndex("by_minute", (q) => q.eq("minute", minute))
    .unique();
  if (row === null) {
    if (delta > 0) await ctx.db.insert("queueBuckets", { minute, count: delta });
    return;
  }
  const count = row.count + delta;
  if (count <= 0) await ctx.db.delete(row._id);
  else await ctx.db.patch(row._id, { count });
}

export function statsStart(now: number): number {
  return Math.floor(now / STATS_BUCKET_MS) * STATS_BUCKET_MS;
}

type StatsEvent = "completed" | "failed" | "dead" | "canceled";

async function recordEvent(
  ctx: MutationCtx,
  now: number,
  event: StatsEvent,
  durationMs?: number,
  droppedDocs = 0,
): Promise<void> {
  const start = statsStart(now);
  let row = await ctx.db
    .query("statsBuckets")
    .withIndex("by_start", (q) => q.eq("start", start))
    .unique();
  if (row === null) {
    const id = await ctx.db.insert("statsBuckets", {
      start,
      completed: 0,
      failed: 0,
      dead: 0,
      canceled: 0,
      durationCount: 0,
      durationSumMs: 0,
      durationMaxMs: 0,
      histogram: new Array<number>(HISTOGRAM_SIZE).fill(0),
    });
    row = (await ctx.db.get(id))!;
  }
  const patch: Partial<Doc<"statsBuckets">> = { [event]: row[event] + 1 };
  if (durationMs !== undefined) {
    const d = Math.max(0, durationMs);
    const histogram = row.histogram.slice();
    while (histogram.length < HISTOGRAM_SIZE) histogram.push(0);
    histogram[histogramIndex(d)] += 1;
    patch.durationCount = row.durationCount + 1;
    patch.durationSumMs = row.durationSumMs + d;
    patch.durationMaxMs = Math.max(row.durationMaxMs, d);
    patch.histogram = histogram;
  }
  if (droppedDocs > 0) {
    patch.jobsWithDroppedDocs = (row.jobsWithDroppedDocs ?? 0) + 1;
    patch.droppedDocs = (row.droppedDocs ?? 0) + droppedDocs;
  }
  await ctx.db.patch(row._id, patch);
}

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
  await bumpCounter(ctx, statusKey("pending"), 1);
  await bumpQueueBucket(ctx, now, 1);
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
  if (isLeased(prev) && !isLeased(next)) {
    full.claimRequestId = undefined;
    full.leaseUntil = undefined;
  }
  if (isTerminal(next)) {
    full.completedAt = now; // when the job ended, whatever the outcome
  }
  const nextRunAt = full.runAt ?? job.runAt;

  if (prev !== next) {
    await bumpCounter(ctx, statusKey(prev), -1);
    await bumpCounter(ctx, statusKey(next), 1);
  }
  if (isQueued(prev)) await bumpQueueBucket(ctx, job.runAt, -1);
  if (isQueued(next)) await bumpQueueBucket(ctx, nextRunAt, 1);

  if (next === "completed") {
    const duration =
      job.startedAt !== undefined ? now - job.startedAt : (full.result?.durationMs ?? 0);
    await recordEvent(ctx, now, "completed", duration, full.result?.dropped?.count ?? 0);
  } else if (next === "failed" || opts.failedAttempt === true) {
    await recordEvent(ctx, now, "failed");
  }
  if (next === "dead") await recordEvent(ctx, now, "dead");
  if (next === "canceled") await recordEvent(ctx, now, "canceled");

  if (isTerminal(next)) {
    if (job.hasSecret) {
      await deleteSecrets(ctx, job._id);
      full.hasSecret = false;
    }
    // Documents go in scheduled batches (docs:purgeStale), never in this transaction: a
    // job's leftovers can be far larger than one transaction may read.
    await ctx.scheduler.runAfter(0, internal.docs.purgeStale, { jobId: job._id });
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

/**
 * The oldest queued job with runAt <= now (pending or failed) that any worker may take, or
 * null. Jobs targeted at one worker (targetWorkerId) are skipped: they are few (a rollout's
 * smoke job), so the walk past them stays short.
 */
export async function oldestReady(ctx: QueryCtx, now: number): Promise<Job | null> {
  const [p, f] = await Promise.all(
    (["pending", "failed"] as const).map((status) =>
      ctx.db
        .query("jobs")
        .withIndex("by_status_runAt", (q) => q.eq("status", status).lte("runAt", now))
        .filter((q) => q.eq(q.field("targetWorkerId"), undefined))
        .first(),
    ),
  );
  if (p === null) return f;
  if (f === null) return p;
  return f.runAt < p.runAt ? f : p;
}

/**
 * A queued job with runAt <= now targeted at `workerId` (failed ones first, then pending,
 * each oldest first), or null. One index range: statuses sort as strings, and the only
 * statuses from "failed" to "pending" are the two queued ones (policy.ts JOB_STATUSES; a
 * new status must not sort between them). Jobs due later are walked past: a worker has at
 * most a few targeted jobs queued (a rollout's smoke job).
 */
export async function oldestTargeted(ctx: QueryCtx, workerId: string, now: number): Promise<Job | null> {
  return await ctx.db
    .query("jobs")
    .withIndex("by_target_status_runAt", (q) =>
      q.eq("targetWorkerId", workerId).gte("status", "failed").lte("status", "pending"),
    )
    .filter((q) => q.lte(q.field("runAt"), now))
    .first();
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
export type ReclaimOutcome = "pending" | "dead" | "canceled";

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
          runAt: now,
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
