// Convex validators shared by the schema and the functions' `args` / `returns`.
import { v } from "convex/values";
import {
  DISPATCHER_MODES,
  DOC_KINDS,
  DROP_REASONS,
  ERROR_KINDS,
  JOB_STATUSES,
  LEASED_STATUSES,
  OUTCOMES,
  RECLAIM_OUTCOMES,
  RETRY_OUTCOMES,
  STUCK_REASONS,
} from "./policy";

/** One of the values of an enumeration of policy.ts (its one source). */
function oneOf<T extends string>(values: readonly T[]) {
  return v.union(...values.map((value) => v.literal(value)));
}

export const vStatus = oneOf(JOB_STATUSES);

export const vErrorKind = oneOf(ERROR_KINDS);

export const vRetryOutcome = oneOf(RETRY_OUTCOMES);

/** The dispatcher's mode (lib/dispatcher.ts). */
export const vDispatcherMode = oneOf(DISPATCHER_MODES);

/** A transition's effect on the outcome statistics (statsBuckets). */
export const vOutcome = oneOf(OUTCOMES);

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

export const vDropReason = oneOf(DROP_REASONS);

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

export const vDocKind = oneOf(DOC_KINDS);

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
  slot: v.optional(v.number()), // the worker's slot it runs in (what it offers back when done)
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
export const vStuckReason = oneOf(STUCK_REASONS);

/** A claimed/running job that looks stuck (operator:listStuck): no secrets, no lease token. */
export const vStuckJob = v.object({
  jobId: v.string(),
  status: oneOf(LEASED_STATUSES),
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
export const vReclaimOutcome = oneOf(RECLAIM_OUTCOMES);
