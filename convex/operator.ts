// Operator functions for the stuck-jobs runbook (playbooks/runbook-stuck-jobs.yml through
// `fondation-worker stuck|reclaim|requeue`). Guarded by the worker token like the worker
// functions. docs/CONTRACT.md is the wire contract.
import { v } from "convex/values";
import { mutation, query } from "./_generated/server";
import { requireOperator } from "./lib/auth";
import { fail, invalid } from "./lib/errors";
import {
  expiredLeases,
  getJob,
  oldestExpired,
  publicJob,
  reclaimCounts,
  reclaimExpiredLeases,
  setStatus,
  type Job,
} from "./lib/model";
import { ACTIVE_STATUSES, type StuckReason } from "./lib/policy";
import { vPublicJob, vReclaimOutcome, vStuckJob } from "./lib/validators";

/** listStuck returns at most this many jobs by default, and never more than the maximum. */
export const STUCK_DEFAULT_LIMIT = 100;
export const STUCK_MAX_LIMIT = 500;
/** Requeue records kept on a job (the oldest are dropped). */
export const MAX_REQUEUE_RECORDS = 10;


function stuckView(job: Job, why: StuckReason) {
  return {
    jobId: job._id as string,
    status: job.status as "claimed" | "running",
    why,
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    workerId: job.lockedBy ?? null,
    leaseExpiresAt: job.leaseUntil ?? null,
    startedAt: job.startedAt ?? null,
    repoUrl: job.repoUrl,
    branch: job.branch ?? null,
    cancelRequested: job.cancelRequested,
  };
}

/** When the job became stuck: its lease expiry, or when the running attempt started. */
function stuckSince(view: ReturnType<typeof stuckView>): number {
  return (view.why === "lease_expired" ? view.leaseExpiresAt : view.startedAt) ?? 0;
}

/**
 * Claimed/running jobs whose lease expired (`lease_expired`, reported first when both
 * apply), and, with `runningLongerThanMs`, running jobs whose current attempt started
 * longer ago than that (`running_too_long`). Oldest first, at most `limit` (default 100,
 * at most 500). Two index ranges, no table scan; never a secret or a lease token.
 */
export const listStuck = query({
  args: {
    token: v.optional(v.string()),
    runningLongerThanMs: v.optional(v.number()),
    limit: v.optional(v.number()),
  },
  returns: v.array(vStuckJob),
  handler: async (ctx, args) => {
    requireOperator(args.token);
    const threshold = args.runningLongerThanMs;
    if (threshold !== undefined && (!Number.isFinite(threshold) || threshold < 0)) {
      invalid("runningLongerThanMs must be a non-negative number of milliseconds");
    }
    const requested =
      args.limit !== undefined && Number.isFinite(args.limit) ? args.limit : STUCK_DEFAULT_LIMIT;
    const limit = Math.min(Math.max(Math.floor(requested), 1), STUCK_MAX_LIMIT);
    const now = Date.now();

    const found = new Map<string, ReturnType<typeof stuckView>>();
    for (const job of await expiredLeases(ctx, now, limit)) {
      found.set(job._id as string, stuckView(job, "lease_expired"));
    }
    if (threshold !== undefined) {
      const longRunning = await ctx.db
        .query("jobs")
        .withIndex("by_status_startedAt", (q) =>
          q.eq("status", "running").gte("startedAt", 0).lt("startedAt", now - threshold),
        )
        .take(limit);
      for (const job of longRunning) {
        if (!found.has(job._id as string)) {
          found.set(job._id as string, stuckView(job, "running_too_long"));
        }
      }
    }
    return [...found.values()].sort((a, b) => stuckSince(a) - stuckSince(b)).slice(0, limit);
  },
});

/**
 * The reclaim cron's pass (jobs:reclaimExpired), now: expired leases go back to pending
 * (the attempt stays consumed), or dead at maxAttempts, or canceled after a cancel
 * request. At most RECLAIM_BATCH (100) jobs per call; `more` says that expired leases
 * remain (call again).
 */
export const reclaimNow = mutation({
  args: { token: v.optional(v.string()) },
  returns: v.object({
    moved: v.number(),
    dead: v.number(),
    canceled: v.number(),
    more: v.boolean(),
    jobs: v.array(v.object({ jobId: v.string(), outcome: vReclaimOutcome })),
  }),
  handler: async (ctx, args) => {
    requireOperator(args.token);
    const now = Date.now();
    const jobs = await reclaimExpiredLeases(ctx, now);
    const more = (await oldestExpired(ctx, now)) !== null;
    return { ...reclaimCounts(jobs), more, jobs };
  },
});

/**
 * A dead job goes back to pending, ready now, with attempts and deferrals reset. Its last
 * error stays on the job and is also recorded in `requeues` (with the attempts and
 * deferrals it had used) for audit. Refused with INVALID_STATE when the job is not dead, or
 * when the same user's job with the same dedupeKey is active (at most one active job per
 * key). A private repository's GitHub token was deleted when the job died: such a job
 * cannot clone again; enqueue it anew with the token instead.
 */
export const requeue = mutation({
  args: { token: v.optional(v.string()), jobId: v.string() },
  returns: vPublicJob,
  handler: async (ctx, args) => {
    requireOperator(args.token);
    const job = await getJob(ctx, args.jobId);
    if (job === null) fail("NOT_FOUND", "no such job");
    if (job.status !== "dead") {
      fail("INVALID_STATE", `job ${job._id} is ${job.status}: only a dead job can be requeued`);
    }
    if (job.dedupeKey !== undefined) {
      const dedupeKey = job.dedupeKey;
      for (const status of ACTIVE_STATUSES) {
        const active = await ctx.db
          .query("jobs")
          .withIndex("by_user_dedupe_status", (q) =>
            q.eq("userId", job.userId).eq("dedupeKey", dedupeKey).eq("status", status),
          )
          .first();
        if (active !== null) {
          fail(
            "INVALID_STATE",
            `job ${active._id} with the same dedupe key is ${status}: only one may be active`,
          );
        }
      }
    }
    const now = Date.now();
    const record = {
      at: now,
      attempts: job.attempts,
      deferrals: job.deferrals,
      ...(job.lastError !== undefined ? { lastError: job.lastError } : {}),
      ...(job.lastErrorKind !== undefined ? { lastErrorKind: job.lastErrorKind } : {}),
    };
    const requeued = await setStatus(
      ctx,
      job,
      "pending",
      {
        runAt: now,
        attempts: 0,
        deferrals: 0,
        cancelRequested: false,
        requeues: [...(job.requeues ?? []), record].slice(-MAX_REQUEUE_RECORDS),
        lockedBy: undefined,
        progress: undefined,
        releaseReason: undefined,
        uploadRunId: undefined,
        uploadCount: 0,
        staleRuns: undefined,
        startedAt: undefined,
        completedAt: undefined,
      },
      now,
    );
    return publicJob(requeued);
  },
});
