// Queue policy: constants and pure functions (no database, no clock). Tested directly.
//
// The contract's enumerations are declared here once, each value with its comment:
// convex/lib/validators.ts builds its validators from these arrays, and the worker's
// worker/fondation_worker/contract.py is generated from them (`python -m scripts.contract`;
// tests/docs/test_single_sources.py fails when it is stale). Adding a value is one line here,
// then that command.

/** Every status a job can be in. */
export const JOB_STATUSES = [
  "pending", // waiting for a worker: ready when runAt <= now, scheduled otherwise
  "assigned", // handed to one idle worker slot by the dispatcher, not accepted yet
  "claimed", // a worker holds its lease, the job has not started yet
  "running", // a worker holds its lease and runs it
  "completed", // done, its documents stored
  "failed", // an attempt failed: it waits for its retry (runAt), like pending
  "dead", // no attempt or deferral left; an operator may requeue it
  "canceled", // canceled by its user or an operator
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** Waiting for a worker: ready when runAt <= now, scheduled otherwise. */
export const QUEUED_STATUSES = ["pending", "failed"] as const satisfies readonly JobStatus[];
/**
 * Handed to one idle worker slot by the dispatcher (dispatch.ts), not yet accepted: no
 * attempt consumed, no lease token; `leaseUntil` is the deadline to accept it by.
 */
export const ASSIGNED_STATUSES = ["assigned"] as const satisfies readonly JobStatus[];
/** Held by a worker under a lease. */
export const LEASED_STATUSES = ["claimed", "running"] as const satisfies readonly JobStatus[];
/** Never leave these. */
export const TERMINAL_STATUSES = [
  "completed",
  "dead",
  "canceled",
] as const satisfies readonly JobStatus[];
/** A dedupeKey maps to at most one job in these states. */
export const ACTIVE_STATUSES = [
  "pending",
  "assigned",
  "claimed",
  "running",
  "failed",
] as const satisfies readonly JobStatus[];

export function isQueued(s: JobStatus): boolean {
  return (QUEUED_STATUSES as readonly JobStatus[]).includes(s);
}
export function isAssigned(s: JobStatus): boolean {
  return s === "assigned";
}
export function isLeased(s: JobStatus): boolean {
  return (LEASED_STATUSES as readonly JobStatus[]).includes(s);
}
export function isTerminal(s: JobStatus): boolean {
  return (TERMINAL_STATUSES as readonly JobStatus[]).includes(s);
}

/** What a transition counts as in the outcome statistics (a failed attempt that will retry). */
export const OUTCOMES = [
  "completed", // a job completed
  "failed", // an attempt failed and will retry (an expired lease included)
  "dead", // a job ended dead
  "canceled", // a job ended canceled
] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** What jobs:retryOrFail leaves a job in (a job status). */
export const RETRY_OUTCOMES = [
  "failed", // waits for its retry (runAt)
  "dead", // no attempt or deferral left
  "pending", // deferred: ready again at runAt, no attempt consumed
  "canceled", // a cancel was requested meanwhile
] as const satisfies readonly JobStatus[];
export type RetryOutcome = (typeof RETRY_OUTCOMES)[number];

/** Why operator:listStuck reports a claimed/running job. */
export const STUCK_REASONS = [
  "lease_expired", // its lease ran out: its worker died or lost Convex
  "running_too_long", // running for longer than the threshold asked for
] as const;
export type StuckReason = (typeof STUCK_REASONS)[number];

/** What one expired lease became in a reclaim pass (a job status). */
export const RECLAIM_OUTCOMES = [
  "pending", // back in the queue, ready now (the attempt stays consumed)
  "dead", // it was the last attempt
  "canceled", // a cancel was requested
] as const satisfies readonly JobStatus[];
export type ReclaimOutcome = (typeof RECLAIM_OUTCOMES)[number];

/** What a generated document is. */
export const DOC_KINDS = [
  "chapter", // under chapters/, or named chapter*
  "tutorial", // under tutorials/, or named tutorial*
  "toc", // index, toc, readme, table-of-contents or summary at the top
  "yaml", // a .yaml or .yml file
  "other",
] as const;
export type DocKind = (typeof DOC_KINDS)[number];

/** Error kinds the worker reports to retryOrFail (docs/CONTRACT.md). */
export const ERROR_KINDS = [
  "transient",
  "timeout",
  "permanent",
  "invalid_repository",
  "repository_not_found",
  "auth",
  "usage_limit",
  "disk",
  "shutdown",
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** What a reported error does to the job. */
export type ErrorPolicy = "consume" | "fatal" | "defer";

export function errorPolicy(kind: ErrorKind): ErrorPolicy {
  switch (kind) {
    case "transient":
    case "timeout":
      return "consume";
    case "permanent":
    case "invalid_repository":
    case "repository_not_found":
      return "fatal";
    case "auth":
    case "usage_limit":
    case "disk":
    case "shutdown":
      return "defer";
  }
}

export const DEFAULT_MAX_ATTEMPTS = 3;
export const MAX_MAX_ATTEMPTS = 10;
/** Retries that do not consume an attempt (defer kinds, release) before the job is dead. */
export const MAX_DEFERRALS = 20;

export const BACKOFF_BASE_MS = 10_000;
export const BACKOFF_CAP_MS = 10 * 60_000;
/** A retryAfterMs longer than this is clamped (the job is deferred again if still limited). */
export const MAX_RETRY_AFTER_MS = 24 * 60 * 60_000;

// The worker's LEASE_MS bounds (worker/fondation_worker/config.py), the one source:
// tests/docs/test_setting_layers.py fails when these differ from them.
export const MIN_LEASE_MS = 1_000;
export const MAX_LEASE_MS = 60 * 60_000;

/** Expired leases handled per reclaim pass (a dispatcher tick, operator:reclaimNow). */
export const RECLAIM_BATCH = 100;

// ---------------------------------------------------------------- dispatch (dispatch.ts)

/** Due jobs paired with idle slots per dispatcher tick (and unaccepted assignments expired). */
export const DISPATCH_BATCH = 64;
/** Slots one worker may hold (its MAX_CONCURRENT_JOBS is at most 32). */
export const MAX_WORKER_SLOTS = 32;
/**
 * While due jobs wait for a free slot, the dispatcher looks again after this, doubling up
 * to DISPATCH_BACKLOG_MAX_MS while no slot frees up (a worker that finishes a job offers its
 * slot in the same call, so the next tick finds it).
 */
export const DISPATCH_BACKLOG_MS = 250;
export const DISPATCH_BACKLOG_MAX_MS = 2_000;
/**
 * After this many ticks in a row found no free slot (about 4 s), the dispatcher stops
 * looking (starved) and the next slot a worker offers starts it again: a fleet busy with
 * long jobs, or no fleet at all, costs no calls.
 */
export const DISPATCH_STARVE_AFTER_TICKS = 4;
/**
 * A chain that has handed out this many jobs lingers when nothing is due any more, ticking
 * after 0.5, 1 and 2 s (DISPATCH_LINGER_TICKS) before it parks: a burst's next jobs find
 * it running. A single job's chain parks at once.
 */
export const DISPATCH_LINGER_AFTER = 2;
export const DISPATCH_LINGER_TICKS = 3;
/** What the dispatcher is doing (the dispatcher table). */
export const DISPATCHER_MODES = ["idle", "sleeping", "active", "starved"] as const;
export type DispatcherMode = (typeof DISPATCHER_MODES)[number];
/** An assignment must be accepted within the slot's acceptMs, bounded by these. */
export const MIN_ACCEPT_MS = 5_000;
export const MAX_ACCEPT_MS = 10 * 60_000;
/** A claim that names no acceptMs (the worker sends its own: docs/ARCHITECTURE.md). */
export const DEFAULT_ACCEPT_MS = 60_000;
/**
 * Queue events (the counters' log) newer than this are left to the next tick: a mutation
 * still in flight writes events about "now", so the rollup never reads the range they land in.
 */
export const ROLLUP_SETTLE_MS = 1_000;
/** Events folded into the counters per tick; metrics:queue reads at most this many more. */
export const ROLLUP_BATCH = 400;
export const MAX_UNROLLED_EVENTS = 8_000;

/**
 * Delay before retry number `n` (1-based): base * 2^(n-1), capped, times a jitter factor
 * in [0.5, 1.5), capped again. So every delay lies in [base/2, cap].
 * `random` is a number in [0, 1) (Math.random inside Convex, which is seeded per call).
 */
export function backoffMs(n: number, random: number): number {
  const attempt = Number.isFinite(n) ? Math.max(Math.floor(n), 1) : n > 0 ? 31 : 1;
  const exponent = Math.min(attempt - 1, 30);
  const raw = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** exponent);
  const r = Number.isFinite(random) ? Math.min(Math.max(random, 0), 1) : 0.5;
  return Math.round(Math.min(BACKOFF_CAP_MS, raw * (0.5 + r)));
}

/** Duration histogram upper bounds (ms) for the p95 estimate; the last bucket is open. */
export const DURATION_BOUNDS_MS: readonly number[] = [
  1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 180_000, 300_000, 450_000,
  600_000, 900_000, 1_200_000, 1_800_000, 2_700_000, 3_600_000, 5_400_000, 7_200_000,
  10_800_000, 14_400_000, 21_600_000,
];
export const HISTOGRAM_SIZE = DURATION_BOUNDS_MS.length + 1;

export function histogramIndex(durationMs: number): number {
  for (let i = 0; i < DURATION_BOUNDS_MS.length; i++) {
    if (durationMs <= DURATION_BOUNDS_MS[i]) return i;
  }
  return DURATION_BOUNDS_MS.length;
}

/**
 * Quantile estimate from a histogram: linear interpolation inside the bucket where the
 * quantile falls, never above the largest value seen. null when empty.
 */
export function histogramQuantile(
  histogram: readonly number[],
  q: number,
  maxSeenMs: number,
): number | null {
  const total = histogram.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    const c = histogram[i] ?? 0;
    if (c > 0 && seen + c >= rank) {
      const lower = i === 0 ? 0 : DURATION_BOUNDS_MS[i - 1];
      const upper = i < DURATION_BOUNDS_MS.length ? DURATION_BOUNDS_MS[i] : maxSeenMs;
      const fraction = (rank - seen) / c;
      return Math.min(maxSeenMs, Math.round(lower + (upper - lower) * fraction));
    }
    seen += c;
  }
  return maxSeenMs;
}

/** Size of a metrics stats bucket. "Last hour" is the 12 newest buckets. */
export const STATS_BUCKET_MS = 5 * 60_000;
/** Size of a queued-job runAt bucket (for the ready/scheduled split). */
export const QUEUE_BUCKET_MS = 60_000;
/** Stats buckets are kept this long, then pruned. */
export const STATS_RETENTION_MS = 2 * 24 * 60 * 60_000;

/** Upload limits (docs:uploadDocs). */
export const MAX_DOCS_PER_CALL = 50;
export const MAX_DOC_BYTES = 800_000;
export const MAX_CALL_BYTES = 4_000_000;
export const MAX_DOCS_PER_RUN = 1_000;
/** Stale documents deleted per transaction; the rest continue in a scheduled call. */
export const DOC_PURGE_BATCH = 100;
// Content bytes one purge batch may delete: half of Convex's 16 MiB read limit per
// transaction, the rest left for metadata and margin.
export const DOC_PURGE_BYTES = 8 * 1024 * 1024;

/** Constant-time string comparison: every character is examined whatever the input. */
export function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = i < a.length ? a.charCodeAt(i) : 0;
    const y = i < b.length ? b.charCodeAt(i) : 0;
    diff |= x ^ y;
  }
  return diff === 0;
}

/** Why the worker left a generated file out of a job's documents (summary.dropped). */
export const DROP_REASONS = [
  "not_a_doc", // not markdown or YAML
  "symlink",
  "too_large", // one file over the per-file cap
  "unreadable", // binary, not UTF-8, empty, changed while read, cannot open
  "outside_output", // hard link or resolves outside the output directory
  "over_doc_cap", // past the per-job document count cap
  "over_total_size", // past the per-job total size cap
] as const;
export type DropReason = (typeof DROP_REASONS)[number];
