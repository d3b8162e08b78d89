// Convex validators shared by the schema and the functions' `args` / `returns`.
import { v } from "convex/values";
import { DROP_REASONS, ERROR_KINDS, JOB_STATUSES } from "./policy";

export const vStatus = v.union(
  v.literal(JOB_STATUSES[0]),
  v.literal(JOB_STATUSES[1]),
  v.literal(JOB_STATUSES[2]),
  v.literal(JOB_STATUSES[3]),
  v.literal(JOB_STATUSES[4]),
  v.literal(JOB_STATUSES[5]),
  v.literal(JOB_STATUSES[6]),
);

export const vErrorKind = v.union(
  v.literal(ERROR_KINDS[0]),
  v.literal(ERROR_KINDS[1]),
  v.literal(ERROR_KINDS[2]),
  v.literal(ERROR_KINDS[3]),
  v.literal(ERROR_KINDS[4]),
  v.literal(ERROR_KINDS[5]),
  v.literal(ERROR_KINDS[6]),
  v.literal(ERROR_KINDS[7]),
  v.literal(ERROR_KINDS[8]),
);

export const vProgress = v.object({
  step: v.optional(v.string()),
  currentStep: v.optional(v.number()),
  totalSteps: v.optional(v.number()),
  message: v.optional(v.string()),
});

/** Secrets the worker masked in one document before upload: which doc, how many. */
export const vRedaction = v.object({
  slug: v.string(),
  count: v.number(),
});

export const vDropReason = v.union(
  v.literal(DROP_REASONS[0]),
  v.literal(DROP_REASONS[1]),
  v.literal(DROP_REASONS[2]),
  v.literal(DROP_REASONS[3]),
  v.literal(DROP_REASONS[4]),
  v.literal(DROP_REASONS[5]),
  v.literal(DROP_REASONS[6]),
);

/** Generated files the worker left out of the job's documents, by reason. */
export const vDropped = v.object({
  count: v.number(),
  reasons: v.array(v.object({ reason: vDropReason, count: v.number() })),
});

export const vSummary = v.object({
  docsCount: v.number(),
  durationMs: v.number(),
  costUsd: v.optional(v.number()),
  redactions: v.optional(v.array(vRedaction)),
  dropped: v.optional(vDropped),
});

export const vDocKind = v.union(
  v.literal("chapter"),
  v.literal("tutorial"),
  v.literal("toc"),
  v.literal("yaml"),
  v.literal("other"),
);

export const vDocInput = v.object({
  slug: v.string(),
  title: v.string(),
  kind: vDocKind,
  order: v.number(),
  content: v.string(),
});

/** One operator:requeue of a dead job, kept on the job for audit. */
export const vRequeue = v.object({
  at: v.number(),
  lastError: v.optional(v.string()),
  lastErrorKind: v.optional(v.string()),
  attempts: v.number(),
  deferrals: v.number(),
});

/** What claimOne returns (docs/CONTRACT.md: ClaimedJob). */
export const vClaimedJob = v.object({
  jobId: v.string(),
  leaseToken: v.string(),
  leaseUntil: v.number(),
  attempt: v.number(),
  maxAttempts: v.number(),
  repoUrl: v.string(),
  branch: v.union(v.string(), v.null()),
  userId: v.string(),
  githubToken: v.optional(v.string()),
});

/** A job as clients see it: never the lease token, claim request id or GitHub token. */
export const vPublicJob = v.object({
  jobId: v.string(),
  repoUrl: v.string(),
  branch: v.union(v.string(), v.null()),
  userId: v.string(),
  status: vStatus,
  runAt: v.number(),
  attempts: v.number(),
  maxAttempts: v.number(),
  deferrals: v.number(),
  lockedBy: v.optional(v.string()),
  leaseUntil: v.optional(v.number()),
  dedupeKey: v.optional(v.string()),
  targetWorkerId: v.optional(v.string()),
  lastError: v.optional(v.string()),
  lastErrorKind: v.optional(v.string()),
  requeues: v.optional(v.array(vRequeue)),
  progress: v.optional(vProgress),
  result: v.optional(vSummary),
  cancelRequested: v.boolean(),
  createdAt: v.number(),
  startedAt: v.optional(v.number()),
  completedAt: v.optional(v.number()),
  updatedAt: v.number(),
});

/** Why operator:listStuck reports a job. */
export const vStuckReason = v.union(v.literal("lease_expired"), v.literal("running_too_long"));

/** A claimed/running job that looks stuck (operator:listStuck): no secrets, no lease token. */
export const vStuckJob = v.object({
  jobId: v.string(),
  status: v.union(v.literal("claimed"), v.literal("running")),
  why: vStuckReason,
  attempts: v.number(),
  maxAttempts: v.number(),
  workerId: v.union(v.string(), v.null()),
  leaseExpiresAt: v.union(v.number(), v.null()),
  startedAt: v.union(v.number(), v.null()),
  repoUrl: v.string(),
  branch: v.union(v.string(), v.null()),
  cancelRequested: v.boolean(),
});

/** What one expired lease became in a reclaim pass. */
export const vReclaimOutcome = v.union(v.literal("pending"), v.literal("dead"), v.literal("canceled"));
