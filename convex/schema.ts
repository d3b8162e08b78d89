import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import { vDispatcherMode, vDocKind, vOutcome, vProgress, vRequeue, vStatus, vSummary } from "./lib/validators";

export default defineSchema({
  // One row per analysis job. Every status change goes through lib/model.ts (setStatus),
  // which also keeps the counters below in step.
  jobs: defineTable({
    // payload
    repoUrl: v.string(),
    branch: v.optional(v.string()), // absent: the repository's default branch
    userId: v.string(),
    hasSecret: v.boolean(), // a jobSecrets row exists (private repository)
    // queue
    status: vStatus,
    runAt: v.number(), // pending/failed: not before this time
    attempts: v.number(), // attempts consumed (a claim consumes one, deferrals give it back)
    maxAttempts: v.number(),
    deferrals: v.number(), // retries that did not consume an attempt (bounded by MAX_DEFERRALS)
    dedupeKey: v.optional(v.string()),
    // Only this worker may claim the job (an operator's job for one worker: the rollout's
    // smoke job on its canary). Absent: any worker.
    targetWorkerId: v.optional(v.string()),
    // lease (fencing: leaseToken is new on every claim; leaseGeneration counts claims)
    lockedBy: v.optional(v.string()),
    // the slot of lockedBy the dispatcher gave it to (kept while that worker holds it)
    assignedSlot: v.optional(v.number()),
    leaseUntil: v.optional(v.number()), // assigned: the deadline to accept it by
    leaseToken: v.optional(v.string()),
    leaseGeneration: v.number(),
    claimRequestId: v.optional(v.string()), // set while claimed/running only
    // The worker call that ended the current claim (retryOrFail, release, acknowledgeCancel):
    // a retry of it with the same lease token is answered as applied, not LEASE_LOST.
    finalCall: v.optional(v.string()),
    cancelRequested: v.boolean(),
    // outcome
    lastError: v.optional(v.string()),
    lastErrorKind: v.optional(v.string()),
    releaseReason: v.optional(v.string()),
    // operator:requeue of a dead job: what it looked like when it was requeued (newest last)
    requeues: v.optional(v.array(vRequeue)),
    progress: v.optional(vProgress),
    result: v.optional(vSummary),
    // documents: readers see only docsRunId's set; uploads of the current attempt are staged
    docsRunId: v.optional(v.string()),
    uploadRunId: v.optional(v.string()),
    uploadCount: v.number(),
    // an earlier run staged documents too: the job's end has another run's to purge
    staleRuns: v.optional(v.boolean()),
    // timestamps (ms)
    createdAt: v.number(),
    startedAt: v.optional(v.number()),
    completedAt: v.optional(v.number()),
    updatedAt: v.number(),
  })
    .index("by_status_runAt", ["status", "runAt"]) // claim order, ready/scheduled, oldest ready
    .index("by_status_leaseUntil", ["status", "leaseUntil"]) // expired leases
    .index("by_status_startedAt", ["status", "startedAt"]) // running too long (listStuck)
    .index("by_claimRequestId", ["claimRequestId"]) // repeated claim requests
    .index("by_lockedBy_status", ["lockedBy", "status"]) // a restarted worker's old claims
    .index("by_user_dedupe_status", ["userId", "dedupeKey", "status"]) // dedupe
    .index("by_user_createdAt", ["userId", "createdAt"]) // listByUser
    // the dispatcher's pairing (dispatch.ts): untargeted due jobs (targetWorkerId undefined),
    // every queued targeted job, and one worker's due targeted jobs, each one index range
    .index("by_status_target_runAt", ["status", "targetWorkerId", "runAt"]),

  // Private-repository tokens, apart from the job; deleted when the job ends.
  jobSecrets: defineTable({
    jobId: v.id("jobs"),
    githubToken: v.string(),
  }).index("by_job", ["jobId"]),

  // Generated documents. A run's documents are staged under its runId; `complete` points the
  // job's docsRunId at them and deletes every other run's, so readers never see a half set.
  docs: defineTable({
    jobId: v.id("jobs"),
    runId: v.string(),
    repoUrl: v.string(),
    slug: v.string(),
    title: v.string(),
    kind: vDocKind,
    order: v.number(),
    // Content lives in docContents so listings read only this metadata. Rows stored before
    // that split still carry it here (getDoc reads either).
    content: v.optional(v.string()),
    bytes: v.number(),
    hash: v.optional(v.string()), // SHA-256 of the content (hex)
    createdAt: v.number(),
  })
    .index("by_job_run_order", ["jobId", "runId", "order"])
    .index("by_job_run_slug", ["jobId", "runId", "slug"]),

  // One document's content (up to MAX_DOC_BYTES), apart from its metadata row in docs.
  docContents: defineTable({
    docId: v.id("docs"),
    content: v.string(),
  }).index("by_doc", ["docId"]),

  // Per-worker credentials (convex/credentials.ts, lib/auth.ts): one row per issued
  // credential, bound to one worker id. Only the SHA-256 of the secret is stored; a revoked
  // row stays (revokedAt) so `credentials:list` shows what was revoked and when.
  workerCredentials: defineTable({
    workerId: v.string(),
    host: v.optional(v.string()), // the inventory host it was issued for (revoke a host at once)
    secretHash: v.string(), // SHA-256 hex of the whole credential (fwc_...)
    createdAt: v.number(),
    revokedAt: v.optional(v.number()),
  })
    .index("by_secretHash", ["secretHash"])
    .index("by_workerId", ["workerId"])
    .index("by_host", ["host"]),

  // Idle worker slots, and slots the dispatcher handed a job to (dispatch.ts); a slot keeps
  // naming its job while the job runs, until the job's final call offers it again. Each row
  // is written by its worker (offer, withdraw) and by the one dispatcher, never by two
  // workers.
  workerSlots: defineTable({
    workerId: v.string(),
    slot: v.number(), // 0 .. MAX_CONCURRENT_JOBS - 1
    state: v.union(v.literal("idle"), v.literal("assigned")),
    jobId: v.optional(v.id("jobs")), // assigned: the job
    since: v.number(), // idle since / assigned at
    acceptMs: v.number(), // how long an assignment may wait for this worker to accept it
  })
    .index("by_state_since", ["state", "since"]) // the dispatcher: longest idle first
    .index("by_worker_slot", ["workerId", "slot"]), // a worker's own slots (its subscription)

  // The dispatcher's one row: whether a tick chain runs (active), one is scheduled for a
  // later due time (sleeping), jobs are due but no worker slot is free (starved: the next
  // offered slot restarts the chain), or nothing is queued (idle). Ticks of an older epoch
  // stop. Only mode changes write it, so the many mutations that read it (every enqueue,
  // every offered slot) rarely meet a write.
  dispatcher: defineTable({
    name: v.string(), // "main"
    mode: vDispatcherMode,
    epoch: v.number(),
    wakeAt: v.optional(v.number()), // sleeping: when its tick runs
  }).index("by_name", ["name"]),

  // The counters' log: every transition inserts one event (an insert never collides with
  // another mutation's); the dispatcher folds settled events into the tables below, its
  // one writer. metrics:queue adds the events not folded yet, so it stays exact.
  queueEvents: defineTable({
    at: v.number(),
    from: v.optional(vStatus), // absent: a new job
    to: vStatus,
    fromRunAt: v.optional(v.number()), // queued before: its runAt (queue bucket)
    toRunAt: v.optional(v.number()), // queued after: its runAt
    outcome: v.optional(vOutcome), // a stats event (completed, failed attempt, dead, canceled)
    durationMs: v.optional(v.number()), // completed: start to completion
    droppedDocs: v.optional(v.number()), // completed: files left out
  }).index("by_at", ["at"]),

  // Exact per-status job counts ("status:<name>"), folded from queueEvents by the dispatcher.
  counters: defineTable({
    key: v.string(),
    value: v.number(),
  }).index("by_key", ["key"]),

  // Queued (pending/failed) jobs per minute of runAt: the ready/scheduled split without a scan
  // (folded from queueEvents like counters).
  queueBuckets: defineTable({
    minute: v.number(), // runAt floored to QUEUE_BUCKET_MS
    count: v.number(),
  }).index("by_minute", ["minute"]),

  // Transition events per 5 minutes: outcomes and a duration histogram for the metrics
  // (folded from queueEvents like counters).
  statsBuckets: defineTable({
    start: v.number(), // floored to STATS_BUCKET_MS
    completed: v.number(),
    failed: v.number(), // attempt failures that will retry
    dead: v.number(),
    canceled: v.number(),
    durationCount: v.number(),
    durationSumMs: v.number(),
    durationMaxMs: v.number(),
    histogram: v.array(v.number()), // counts per DURATION_BOUNDS_MS bucket
    // completed jobs that left generated files out, and how many files (summary.dropped)
    jobsWithDroppedDocs: v.optional(v.number()),
    droppedDocs: v.optional(v.number()),
  }).index("by_start", ["start"]),
});
