// The job queue: worker-facing (token + lease fenced) and client-facing functions.
// docs/CONTRACT.md is the wire contract; docs/ARCHITECTURE.md has the state machine.
import { v } from "convex/values";
import { internal } from "./_generated/api";
import { internalMutation, mutation, query, type MutationCtx } from "./_generated/server";
import { canSee, holdsJob, requireCaller, requireWorker } from "./lib/auth";
import { workerMutation, workerQuery } from "./lib/functions";
import { fail, invalid, must } from "./lib/errors";
import {
  githubTokenOf,
  insertJob,
  loadLeasedJob,
  publicJob,
  requireJob,
  setStatus,
  settleExpired,
  getJob,
  reclaimCounts,
  reclaimExpiredLeases,
  type Job,
  type JobPatch,
} from "./lib/model";
import {
  ACTIVE_STATUSES,
  DEFAULT_ACCEPT_MS,
  DEFAULT_MAX_ATTEMPTS,
  MAX_DEFERRALS,
  MAX_LEASE_MS,
  MAX_MAX_ATTEMPTS,
  MAX_RETRY_AFTER_MS,
  MIN_LEASE_MS,
  RECLAIM_BATCH,
  backoffMs,
  constantTimeEqual,
  errorPolicy,
  isAssigned,
  isLeased,
  isQueued,
  type ErrorKind,
} from "./lib/policy";
import {
  checkAcceptMs,
  checkSlot,
  checkSlots,
  holdsAssignment,
  idleAgain,
  offerSlot,
  returnAssignment,
  slotRow,
  slotsOf,
  withdrawSlots,
} from "./lib/slots";
import {
  MAX_ERROR_LENGTH,
  MAX_ID_LENGTH,
  MAX_MESSAGE_LENGTH,
  MAX_TOKEN_LENGTH,
  allowedRepoHosts,
  checkBranch,
  checkIdent,
  checkRepoUrl,
  clip,
} from "./lib/validation";
import { stageDocs } from "./lib/staging";
import {
  vClaimedJob,
  vDocInput,
  vErrorKind,
  vProgress,
  vPublicJob,
  vRetryOutcome,
  vStatus,
  vSummary,
} from "./lib/validators";

// ---------------------------------------------------------------- helpers

/** summary.redactions: one entry per document, a positive count, at most one per doc. */
function checkRedactions(redactions: { slug: string; count: number }[], docsCount: number): void {
  if (redactions.length > docsCount) invalid("summary.redactions lists more documents than were uploaded");
  const seen = new Set<string>();
  for (const r of redactions) {
    must(checkIdent("summary.redactions slug", r.slug));
    if (seen.has(r.slug)) invalid(`summary.redactions lists ${r.slug} twice`);
    seen.add(r.slug);
    if (!Number.isInteger(r.count) || r.count < 1) invalid("summary.redactions count must be a positive count");
  }
}

/**
 * The one deferral rule (retryOrFail's defer kinds, release): the attempt is given back and
 * the job is pending again at `runAt(deferrals)`, or dead once it has been deferred more than
 * MAX_DEFERRALS times (`ifDead` adds to `patch` then).
 */
async function defer(
  ctx: MutationCtx,
  job: Job,
  now: number,
  patch: JobPatch,
  runAt: (deferrals: number) => number,
  ifDead: JobPatch = {},
): Promise<{ status: "pending"; runAt: number } | { status: "dead" }> {
  const deferrals = job.deferrals + 1;
  const attempts = Math.max(0, job.attempts - 1);
  if (deferrals > MAX_DEFERRALS) {
    await setStatus(ctx, job, "dead", { ...patch, ...ifDead, deferrals, attempts }, now);
    return { status: "dead" };
  }
  const at = runAt(deferrals);
  await setStatus(ctx, job, "pending", { ...patch, deferrals, attempts, runAt: at }, now);
  return { status: "pending", runAt: at };
}

function checkLeaseMs(leaseMs: number): number {
  if (!Number.isFinite(leaseMs) || leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS) {
    invalid(`leaseMs must be between ${MIN_LEASE_MS} and ${MAX_LEASE_MS}`);
  }
  return Math.round(leaseMs);
}

function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36);
}

/**
 * A fresh lease token. Math.random is seeded per call in Convex, so the token also carries
 * the job's lease generation (unique per claim of this job) and a hash of the job id,
 * request id and time.
 */
function newLeaseToken(job: Job, generation: number, requestId: string, now: number): string {
  let random = "";
  for (let i = 0; i < 4; i++) {
    random += Math.floor(Math.random() * 0x100000000)
      .toString(36)
      .padStart(7, "0");
  }
  return `${generation}.${random}.${fnv1a(`${job._id}|${requestId}|${now}`)}`;
}

async function claimedJob(ctx: MutationCtx, job: Job) {
  const githubToken = await githubTokenOf(ctx, job);
  return {
    jobId: job._id as string,
    leaseToken: job.leaseToken!,
    leaseUntil: job.leaseUntil!,
    attempt: job.attempts,
    maxAttempts: job.maxAttempts,
    repoUrl: job.repoUrl,
    branch: job.branch ?? null,
    userId: job.userId,
    ...(githubToken !== undefined ? { githubToken } : {}),
    ...(job.assignedSlot !== undefined ? { slot: job.assignedSlot } : {}),
  };
}

function cleanProgress(p: {
  step?: string;
  currentStep?: number;
  totalSteps?: number;
  message?: string;
}) {
  const out: { step?: string; currentStep?: number; totalSteps?: number; message?: string } = {};
  const num = (n: number | undefined) => n !== undefined && Number.isFinite(n) && n >= 0;
  if (p.step !== undefined) out.step = clip(p.step, MAX_ID_LENGTH);
  if (num(p.currentStep)) out.currentStep = p.currentStep;
  if (num(p.totalSteps)) out.totalSteps = p.totalSteps;
  if (p.message !== undefined) out.message = clip(p.message, MAX_MESSAGE_LENGTH);
  return out;
}

/** summary.dropped: whole counts, each reason once, adding up to `count`. */
function checkDropped(dropped: { count: number; reasons: { reason: string; count: number }[] }): void {
  const whole = (n: number) => Number.isInteger(n) && n >= 0;
  if (!whole(dropped.count)) invalid("summary.dropped.count must be a count");
  const seen = new Set<string>();
  let sum = 0;
  for (const r of dropped.reasons) {
    if (!whole(r.count) || r.count === 0) invalid("summary.dropped.reasons counts must be positive counts");
    if (seen.has(r.reason)) invalid(`summary.dropped.reasons lists ${r.reason} twice`);
    seen.add(r.reason);
    sum += r.count;
  }
  if (sum !== dropped.count) invalid("summary.dropped.count must equal the sum of its reasons");
}

type FinalCall = "retryOrFail" | "release" | "acknowledgeCancel";

/**
 * The job, if `call` with this lease token already ended the claim: the retry of a call
 * whose reply was lost. Answered as applied (like `complete`), never LEASE_LOST. The token
 * changes on every claim and `finalCall` is cleared, so this never matches another claim.
 */
async function alreadyEndedBy(
  ctx: MutationCtx,
  jobId: string,
  leaseToken: string,
  call: FinalCall,
): Promise<Job | null> {
  const job = await requireJob(ctx, jobId);
  if (
    !isLeased(job.status) &&
    job.finalCall === call &&
    job.leaseToken !== undefined &&
    leaseToken.length <= 256 &&
    constantTimeEqual(job.leaseToken, leaseToken)
  ) {
    return job;
  }
  return null;
}

// ---------------------------------------------------------------- worker-facing

const vOffer = v.object({ slot: v.number(), acceptMs: v.number() });

/**
 * A worker's final call for a job may offer the slot it frees (`offer`): the slot goes
 * back to dispatch in the same call, so a busy worker never needs a call of its own to
 * get its next job.
 */
async function offerFreedSlot(
  ctx: MutationCtx,
  job: Job,
  offer: { slot: number; acceptMs: number } | undefined,
  now: number,
): Promise<void> {
  // lockedBy names the caller (the lease holder), unless a retried call finds the job
  // handed to another worker since: then there is nothing of the caller's to offer.
  if (offer === undefined || job.lockedBy === undefined || isAssigned(job.status)) return;
  await offerSlot(ctx, job.lockedBy, checkSlot(offer.slot), checkAcceptMs(offer.acceptMs), now);
}

/**
 * The worker's claim: accept a job the dispatcher assigned to one of `slots` (default
 * slot 0), else offer those slots for dispatch and return null. Reads only this worker's
 * slot rows and the job assigned to it: no two workers' claims touch the same document,
 * and an accept writes only the job.
 * Accepting consumes an attempt and starts the lease (a new token); with `start` the job is
 * running at once (what jobs:start does). A repeated requestId returns the claim it made
 * (lease renewed from now), so a retried call, even a later one, cannot claim twice or
 * burn another attempt. A job canceled while assigned is dropped here.
 */
export const claimOne = workerMutation({
  args: {
    workerId: v.string(),
    leaseMs: v.number(),
    requestId: v.string(),
    start: v.optional(v.boolean()),
    slots: v.optional(v.array(v.number())),
    acceptMs: v.optional(v.number()),
  },
  returns: v.union(v.null(), vClaimedJob),
  handler: async (ctx, args) => {
    const workerId = must(checkIdent("workerId", args.workerId));
    const requestId = must(checkIdent("requestId", args.requestId));
    const leaseMs = checkLeaseMs(args.leaseMs);
    const slots = checkSlots(args.slots ?? [0]);
    const acceptMs = checkAcceptMs(args.acceptMs ?? DEFAULT_ACCEPT_MS);
    const now = Date.now();

    const previous = await ctx.db
      .query("jobs")
      .withIndex("by_claimRequestId", (q) => q.eq("claimRequestId", requestId))
      .first();
    if (previous !== null && isLeased(previous.status) && previous.lockedBy === workerId) {
      // The same claim again (its first reply was lost): renew the lease from now, so the
      // worker, which counts its lease from when it sent this request, never counts past
      // Convex's leaseUntil. Never shortened.
      const leaseUntil = Math.max(previous.leaseUntil ?? 0, now + leaseMs);
      await ctx.db.patch(previous._id, { leaseUntil, updatedAt: now });
      return await claimedJob(ctx, { ...previous, leaseUntil });
    }

    for (const slot of slots) {
      const row = await slotRow(ctx, workerId, slot);
      if (row === null || row.state === "idle") {
        await offerSlot(ctx, workerId, slot, acceptMs, now);
        continue;
      }
      const job = row.jobId === undefined ? null : await ctx.db.get(row.jobId);
      if (!holdsAssignment(row, job)) {
        // Moved on meanwhile (canceled, or taken back when its deadline passed): idle again.
        await idleAgain(ctx, row, acceptMs, now);
        continue;
      }
      if (job.targetWorkerId !== undefined && job.targetWorkerId !== workerId) {
        // Never so from the dispatcher (it pairs a targeted job with its worker's slots
        // only); should a row ever say otherwise, the job is not this worker's to run.
        await returnAssignment(ctx, job, now, `targeted at worker ${job.targetWorkerId}`);
        await idleAgain(ctx, row, acceptMs, now);
        continue;
      }
      const generation = job.leaseGeneration + 1;
      // start: the caller begins at once (no separate jobs:start call): straight to running.
      const started = args.start === true;
      const claimed = await setStatus(
        ctx,
        job,
        started ? "running" : "claimed",
        {
          attempts: job.attempts + 1,
          leaseGeneration: generation,
          leaseToken: newLeaseToken(job, generation, requestId, now),
          lockedBy: workerId,
          leaseUntil: now + leaseMs,
          claimRequestId: requestId,
          finalCall: undefined,
          progress: undefined,
          startedAt: started ? now : undefined,
        },
        now,
      );
      // The row stays as it is (it names the job now running in the slot): writing it would
      // re-run this worker's subscription for nothing. The final call's offer makes it idle.
      return await claimedJob(ctx, claimed);
    }
    return null;
  },
});

/**
 * What the dispatcher gave this worker: its slot rows (idle, or assigned a job to accept
 * with claimOne). The worker subscribes to it over Convex's sync protocol: a dispatch
 * re-runs one worker's subscription, not every worker's, and it carries no secret.
 */
export const assignments = workerQuery({
  args: { workerId: v.string() },
  returns: v.object({
    slots: v.array(
      v.object({
        slot: v.number(),
        state: v.union(v.literal("idle"), v.literal("assigned")),
        jobId: v.optional(v.string()),
      }),
    ),
  }),
  handler: async (ctx, args) => {
    const workerId = must(checkIdent("workerId", args.workerId));
    const rows = await slotsOf(ctx, workerId);
    return {
      slots: rows.map((r) => ({
        slot: r.slot,
        state: r.state,
        ...(r.jobId !== undefined ? { jobId: r.jobId as string } : {}),
      })),
    };
  },
});

/**
 * The worker takes its slots (all, or `slots`) out of dispatch: it pauses (Claude auth,
 * usage limit, low disk) or drains. A job assigned to one and not accepted goes back to
 * the queue at once, its attempt unspent.
 */
export const withdraw = workerMutation({
  args: { workerId: v.string(), slots: v.optional(v.array(v.number())), reason: v.optional(v.string()) },
  returns: v.object({ withdrawn: v.number(), returned: v.number() }),
  handler: async (ctx, args) => {
    const workerId = must(checkIdent("workerId", args.workerId));
    const slots = args.slots === undefined ? undefined : checkSlots(args.slots);
    const reason = clip(args.reason ?? "worker withdrew its slot", MAX_MESSAGE_LENGTH);
    return await withdrawSlots(ctx, workerId, slots, Date.now(), reason);
  },
});

/** claimed -> running. Repeating it while running is a no-op. */
export const start = workerMutation({
  args: { jobId: v.string(), leaseToken: v.string() },
  returns: v.null(),
  handler: async (ctx, args) => {
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    if (job.status === "running") return null;
    const now = Date.now();
    await setStatus(ctx, job, "running", { startedAt: now }, now);
    return null;
  },
});

/** Extend the lease, record progress, and tell the worker whether to stop. */
export const heartbeat = workerMutation({
  args: {
    jobId: v.string(),
    leaseToken: v.string(),
    leaseMs: v.number(),
    progress: v.optional(vProgress),
  },
  returns: v.object({ cancelRequested: v.boolean(), leaseUntil: v.number() }),
  handler: async (ctx, args) => {
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    const leaseMs = checkLeaseMs(args.leaseMs);
    const now = Date.now();
    const leaseUntil = now + leaseMs;
    await ctx.db.patch(job._id, {
      leaseUntil,
      updatedAt: now,
      ...(args.progress !== undefined
        ? { progress: { ...job.progress, ...cleanProgress(args.progress) } }
        : {}),
    });
    return { cancelRequested: job.cancelRequested, leaseUntil };
  },
});

/**
 * Success: the run's staged documents become the job's documents (every other run's are
 * deleted) and the summary is recorded. `docs` (optional) is a last batch staged first, as
 * uploadDocs would. summary.docsCount must equal the number of documents uploaded for runId.
 * Repeating it after success is a no-op.
 */
export const complete = workerMutation({
  args: {
    jobId: v.string(),
    leaseToken: v.string(),
    runId: v.string(),
    summary: vSummary,
    docs: v.optional(v.array(vDocInput)),
    offer: v.optional(vOffer),
  },
  returns: v.null(),
  handler: async (ctx, args) => {
    const runId = must(checkIdent("runId", args.runId));
    const existing = await requireJob(ctx, args.jobId);
    if (
      existing.status === "completed" &&
      existing.leaseToken !== undefined &&
      constantTimeEqual(existing.leaseToken, args.leaseToken) &&
      existing.docsRunId === runId
    ) {
      // A retried call whose first reply was lost.
      await offerFreedSlot(ctx, existing, args.offer, Date.now());
      return null;
    }
    let job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    const { docsCount, durationMs, costUsd, redactions, dropped } = args.summary;
    if (!Number.isInteger(docsCount) || docsCount < 0) invalid("summary.docsCount must be a count");
    if (!Number.isFinite(durationMs) || durationMs < 0) invalid("summary.durationMs is invalid");
    if (costUsd !== undefined && (!Number.isFinite(costUsd) || costUsd < 0)) {
      invalid("summary.costUsd is invalid");
    }
    if (redactions !== undefined) checkRedactions(redactions, docsCount);
    if (dropped !== undefined) checkDropped(dropped);
    // The last batch rides along: one round trip fewer, same checks as uploadDocs.
    if (args.docs !== undefined && args.docs.length > 0) {
      job = await stageDocs(ctx, job, runId, args.docs);
    }
    const staged = job.uploadRunId === runId ? job.uploadCount : 0;
    if (staged !== docsCount) {
      invalid(`summary.docsCount is ${docsCount} but ${staged} documents were uploaded for this run`);
    }
    const now = Date.now();
    await setStatus(
      ctx,
      job,
      "completed",
      {
        docsRunId: runId,
        result: {
          docsCount,
          durationMs,
          ...(costUsd !== undefined ? { costUsd } : {}),
          ...(redactions !== undefined && redactions.length > 0 ? { redactions } : {}),
          ...(dropped !== undefined && dropped.count > 0 ? { dropped } : {}),
        },
        progress: undefined,
      },
      now,
    );
    await offerFreedSlot(ctx, job, args.offer, now);
    return null;
  },
});

/**
 * The attempt failed. transient/timeout consume the attempt (failed with backoff, dead at
 * maxAttempts); permanent kinds are dead at once; auth/usage_limit/disk/shutdown give the
 * attempt back and defer (pending at now + retryAfterMs or backoff), dead after
 * MAX_DEFERRALS. A job whose cancel was requested is canceled instead.
 */
export const retryOrFail = workerMutation({
  args: {
    jobId: v.string(),
    leaseToken: v.string(),
    error: v.string(),
    errorKind: vErrorKind,
    retryAfterMs: v.optional(v.number()),
    offer: v.optional(vOffer),
  },
  returns: v.object({
    status: vRetryOutcome,
    runAt: v.optional(v.number()),
  }),
  handler: async (ctx, args) => {
    const done = await alreadyEndedBy(ctx, args.jobId, args.leaseToken, "retryOrFail");
    if (done !== null) {
      // A retried call: the same kind of reply from the state it left (or moved on to).
      await offerFreedSlot(ctx, done, args.offer, Date.now());
      if (done.status === "failed" || done.status === "pending") {
        return { status: done.status, runAt: done.runAt };
      }
      if (done.status === "dead" || done.status === "canceled") return { status: done.status };
    }
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    if (
      args.retryAfterMs !== undefined &&
      (!Number.isFinite(args.retryAfterMs) || args.retryAfterMs < 0)
    ) {
      invalid("retryAfterMs must be a non-negative number");
    }
    const now = Date.now();
    const reply = await failAttempt(ctx, job, args, now);
    await offerFreedSlot(ctx, job, args.offer, now);
    return reply;
  },
});

async function failAttempt(
  ctx: MutationCtx,
  job: Job,
  args: { error: string; errorKind: ErrorKind; retryAfterMs?: number },
  now: number,
): Promise<
  { status: "failed"; runAt: number } | { status: "pending"; runAt: number } | { status: "dead" | "canceled" }
> {
  const outcome = {
    lastError: clip(args.error, MAX_ERROR_LENGTH),
    lastErrorKind: args.errorKind,
    finalCall: "retryOrFail",
  };
  if (job.cancelRequested) {
    await setStatus(ctx, job, "canceled", outcome, now);
    return { status: "canceled" as const };
  }
  switch (errorPolicy(args.errorKind)) {
    case "fatal": {
      await setStatus(ctx, job, "dead", outcome, now);
      return { status: "dead" as const };
    }
    case "consume": {
      if (job.attempts >= job.maxAttempts) {
        await setStatus(ctx, job, "dead", outcome, now);
        return { status: "dead" as const };
      }
      const runAt = now + backoffMs(job.attempts, Math.random());
      await setStatus(ctx, job, "failed", { ...outcome, runAt }, now);
      return { status: "failed" as const, runAt };
    }
    case "defer": {
      const retryAfterMs = args.retryAfterMs;
      return await defer(ctx, job, now, outcome, (deferrals) =>
        retryAfterMs !== undefined
          ? now + Math.min(Math.round(retryAfterMs), MAX_RETRY_AFTER_MS)
          : now + backoffMs(deferrals, Math.random()),
      );
    }
  }
}

/**
 * Graceful shutdown: back to pending now, the attempt given back. Counts toward
 * MAX_DEFERRALS like the other retries that consume no attempt.
 */
export const release = workerMutation({
  args: { jobId: v.string(), leaseToken: v.string(), reason: v.string() },
  returns: v.null(),
  handler: async (ctx, args) => {
    if ((await alreadyEndedBy(ctx, args.jobId, args.leaseToken, "release")) !== null) return null;
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    const now = Date.now();
    const releaseReason = clip(args.reason, MAX_MESSAGE_LENGTH);
    const finalCall = "release";
    if (job.cancelRequested) {
      await setStatus(ctx, job, "canceled", { releaseReason, finalCall }, now);
      return null;
    }
    await defer(ctx, job, now, { releaseReason, finalCall }, () => now, {
      lastError: "too many deferrals",
      lastErrorKind: "shutdown",
    });
    return null;
  },
});

/** The worker stopped a job whose cancel was requested: -> canceled. */
export const acknowledgeCancel = workerMutation({
  args: { jobId: v.string(), leaseToken: v.string(), offer: v.optional(vOffer) },
  returns: v.null(),
  handler: async (ctx, args) => {
    const done = await alreadyEndedBy(ctx, args.jobId, args.leaseToken, "acknowledgeCancel");
    if (done !== null) {
      await offerFreedSlot(ctx, done, args.offer, Date.now());
      return null;
    }
    const job = await loadLeasedJob(ctx, args.jobId, args.leaseToken);
    if (!job.cancelRequested) fail("INVALID_STATE", "no cancel was requested for this job");
    const now = Date.now();
    await setStatus(ctx, job, "canceled", { finalCall: "acknowledgeCancel" }, now);
    await offerFreedSlot(ctx, job, args.offer, now);
    return null;
  },
});

/** Most claims a worker can hold (MAX_CONCURRENT_JOBS is at most 32), with room to spare. */
const RECOVER_BATCH = 100;

/**
 * A worker process starting under `workerId` gives back what a previous process with that
 * id still holds: that process is gone (worker ids are unique among live processes), so
 * nobody runs those jobs. Each is settled as if its lease had just expired (the attempt
 * stays consumed; dead at maxAttempts, canceled after a cancel request, else pending and
 * ready now), instead of waiting for the lease to run out.
 */
export const recoverWorker = workerMutation({
  args: { workerId: v.string() },
  returns: v.object({ moved: v.number(), dead: v.number(), canceled: v.number() }),
  handler: async (ctx, args) => {
    const workerId = must(checkIdent("workerId", args.workerId));
    const now = Date.now();
    // Its slots first: what was assigned and never accepted goes back unspent.
    const { returned } = await withdrawSlots(ctx, workerId, undefined, now, `worker ${workerId} restarted`);
    const held: Job[] = [];
    for (const status of ["claimed", "running"] as const) {
      held.push(
        ...(await ctx.db
          .query("jobs")
          .withIndex("by_lockedBy_status", (q) => q.eq("lockedBy", workerId).eq("status", status))
          .take(RECOVER_BATCH)),
      );
    }
    const done: { outcome: "pending" | "dead" | "canceled" }[] = [];
    for (const job of held) {
      const settled = await settleExpired(ctx, job, now);
      if (settled !== null) {
        done.push({ outcome: settled });
        continue;
      }
      await setStatus(
        ctx,
        job,
        "pending",
        {
          runAt: now,
          lastError: `worker ${workerId} restarted while running it`,
          lastErrorKind: "lease_expired",
        },
        now,
        { failedAttempt: true },
      );
      done.push({ outcome: "pending" });
    }
    const counts = reclaimCounts(done);
    return { ...counts, moved: counts.moved + returned };
  },
});

/**
 * The reclaim pass now (the dev backend's /_dev/reclaim; a dispatcher tick runs the same
 * pass at least every 30 s): expired leases go back to pending (the attempt stays
 * consumed), or become dead at maxAttempts, or canceled when a cancel was requested. At
 * most RECLAIM_BATCH jobs per run; a full batch schedules the rest at once.
 */
export const reclaimExpired = internalMutation({
  args: {},
  returns: v.object({ moved: v.number(), dead: v.number(), canceled: v.number() }),
  handler: async (ctx) => {
    const done = await reclaimExpiredLeases(ctx, Date.now());
    if (done.length >= RECLAIM_BATCH) await ctx.scheduler.runAfter(0, internal.jobs.reclaimExpired, {});
    return reclaimCounts(done);
  },
});

// ---------------------------------------------------------------- client-facing

/**
 * Queue an analysis. With a dedupeKey, the caller's active job (pending, claimed, running
 * or failed) with that key is returned instead of a new one.
 */
export const enqueue = mutation({
  args: {
    repoUrl: v.string(),
    // null and absent both mean the repository's default branch (CONTRACT.md)
    branch: v.optional(v.union(v.string(), v.null())),
    dedupeKey: v.optional(v.string()),
    githubToken: v.optional(v.string()),
    maxAttempts: v.optional(v.number()),
    userId: v.optional(v.string()),
    // Operator only: the one worker (WORKER_ID) allowed to claim it (the rollout's smoke job).
    targetWorkerId: v.optional(v.string()),
    token: v.optional(v.string()),
  },
  returns: v.object({ jobId: v.string(), created: v.boolean() }),
  handler: async (ctx, args) => {
    const caller = await requireCaller(ctx.auth, args.token, args.userId);
    const userId = must(checkIdent("userId", caller.userId));
    const repoUrl = must(checkRepoUrl(args.repoUrl, allowedRepoHosts(process.env.ALLOWED_REPO_HOSTS)));
    const branch = args.branch === undefined || args.branch === null ? undefined : must(checkBranch(args.branch));
    const dedupeKey =
      args.dedupeKey === undefined ? undefined : must(checkIdent("dedupeKey", args.dedupeKey));
    const githubToken =
      args.githubToken === undefined
        ? undefined
        : must(checkIdent("githubToken", args.githubToken, MAX_TOKEN_LENGTH));
    if (args.targetWorkerId !== undefined && caller.kind !== "operator") {
      fail("UNAUTHORIZED", "targetWorkerId is for operators (the operator token) only");
    }
    const targetWorkerId =
      args.targetWorkerId === undefined ? undefined : must(checkIdent("targetWorkerId", args.targetWorkerId));
    const maxAttempts = args.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > MAX_MAX_ATTEMPTS) {
      invalid(`maxAttempts must be an integer between 1 and ${MAX_MAX_ATTEMPTS}`);
    }

    if (dedupeKey !== undefined) {
      for (const status of ACTIVE_STATUSES) {
        const active = await ctx.db
          .query("jobs")
          .withIndex("by_user_dedupe_status", (q) =>
            q.eq("userId", userId).eq("dedupeKey", dedupeKey).eq("status", status),
          )
          .first();
        if (active !== null) return { jobId: active._id as string, created: false };
      }
    }
    const jobId = await insertJob(
      ctx,
      { repoUrl, branch, userId, dedupeKey, maxAttempts, githubToken, targetWorkerId },
      Date.now(),
    );
    return { jobId: jobId as string, created: true };
  },
});

/**
 * pending/failed -> canceled at once; claimed/running -> cancelRequested (the worker stops
 * at its next heartbeat and acknowledges); terminal jobs are left as they are.
 * Returns the job's status after the call.
 */
export const cancel = mutation({
  args: { jobId: v.string(), token: v.optional(v.string()) },
  returns: v.object({ status: vStatus }),
  handler: async (ctx, args) => {
    const caller = await requireCaller(ctx.auth, args.token, undefined);
    const job = await getJob(ctx, args.jobId);
    if (job === null || !canSee(caller, job.userId)) fail("NOT_FOUND", "no such job");
    const now = Date.now();
    if (isQueued(job.status) || isAssigned(job.status)) {
      // An assignment not accepted yet runs nowhere: canceled at once (its worker finds the
      // job gone when it accepts, and offers the slot again).
      await setStatus(ctx, job, "canceled", { cancelRequested: true, lockedBy: undefined }, now);
      return { status: "canceled" as const };
    }
    if (isLeased(job.status) && !job.cancelRequested) {
      await ctx.db.patch(job._id, { cancelRequested: true, updatedAt: now });
    }
    return { status: job.status };
  },
});

/**
 * A job as its user or an operator sees it (null: none, or not theirs). A worker passes its
 * worker token and the job's `leaseToken`: it reads only the job it holds, or held last
 * (the token stays on the job after it ended, so a retried final call can be checked).
 */
export const get = query({
  args: { jobId: v.string(), token: v.optional(v.string()), leaseToken: v.optional(v.string()) },
  returns: v.union(v.null(), vPublicJob),
  handler: async (ctx, args) => {
    if (args.leaseToken !== undefined) {
      const worker = await requireWorker(ctx, args.token);
      const held = await getJob(ctx, args.jobId);
      if (held?.leaseToken === undefined || !constantTimeEqual(held.leaseToken, args.leaseToken)) return null;
      if (!holdsJob(worker, held.lockedBy)) return null; // per-worker credential: its own jobs only
      return publicJob(held);
    }
    const caller = await requireCaller(ctx.auth, args.token, undefined);
    const job = await getJob(ctx, args.jobId);
    if (job === null || !canSee(caller, job.userId)) return null;
    return publicJob(job);
  },
});

/** A user's jobs, newest first (at most 100). */
export const listByUser = query({
  args: {
    userId: v.optional(v.string()),
    limit: v.optional(v.number()),
    token: v.optional(v.string()),
  },
  returns: v.array(vPublicJob),
  handler: async (ctx, args) => {
    const caller = await requireCaller(ctx.auth, args.token, args.userId);
    const requested = args.limit !== undefined && Number.isFinite(args.limit) ? args.limit : 20;
    const limit = Math.min(Math.max(Math.floor(requested), 1), 100);
    const jobs = await ctx.db
      .query("jobs")
      .withIndex("by_user_createdAt", (q) => q.eq("userId", caller.userId))
      .order("desc")
      .take(limit);
    return jobs.map(publicJob);
  },
});
