// The dispatcher: one tick chain at a time pairs due jobs with idle worker slots, so every
// job is handed to exactly one worker and no two claims ever read the queue's head.
// A tick also does the queue's upkeep, as the one writer of what it touches: unaccepted
// assignments and expired leases back to the queue, queue events folded into the counters.
// docs/ARCHITECTURE.md ("Dispatch") explains the design, its failure modes and metrics.
import { v } from "convex/values";
import { internal } from "./_generated/api";
import { internalMutation, type MutationCtx } from "./_generated/server";
import { rollupEvents } from "./lib/aggregates";
import { dispatcherState, park, tickNow } from "./lib/dispatcher";
import { reclaimExpiredLeases, setStatus, type Job } from "./lib/model";
import {
  DISPATCH_BACKLOG_MAX_MS,
  DISPATCH_BACKLOG_MS,
  DISPATCH_BATCH,
  DISPATCH_LINGER_AFTER,
  DISPATCH_LINGER_TICKS,
  DISPATCH_STARVE_AFTER_TICKS,
  MAX_ACCEPT_MS,
  RECLAIM_BATCH,
  ROLLUP_BATCH,
  ROLLUP_SETTLE_MS,
  isLeased,
} from "./lib/policy";
import { holdsAssignment, returnAssignment, slotsOf, type Slot } from "./lib/slots";

const QUEUED = ["pending", "failed"] as const;

/**
 * Up to `limit` queued jobs due by `now` (pending and failed) that any worker may take
 * (no targetWorkerId), oldest runAt first.
 */
async function dueJobs(ctx: MutationCtx, now: number, limit: number): Promise<Job[]> {
  const [pending, failed] = await Promise.all(
    QUEUED.map((status) =>
      ctx.db
        .query("jobs")
        .withIndex("by_status_target_runAt", (q) =>
          q.eq("status", status).eq("targetWorkerId", undefined).lte("runAt", now),
        )
        .take(limit),
    ),
  );
  return [...pending, ...failed].sort((a, b) => a.runAt - b.runAt).slice(0, limit);
}

/**
 * Queued jobs targeted at one worker (targetWorkerId) and due by `now`, oldest runAt first.
 * One index range per status over every queued targeted job (those due later included):
 * they are few (a rollout's smoke job per canary), so DISPATCH_BATCH of each bounds it.
 */
async function dueTargeted(ctx: MutationCtx, now: number): Promise<Job[]> {
  const queued = await Promise.all(
    QUEUED.map((status) =>
      ctx.db
        .query("jobs")
        .withIndex("by_status_target_runAt", (q) => q.eq("status", status).gte("targetWorkerId", ""))
        .take(DISPATCH_BATCH),
    ),
  );
  return queued
    .flat()
    .filter((job) => job.runAt <= now)
    .sort((a, b) => a.runAt - b.runAt);
}

/**
 * When the next queued job falls due (after `now`), or null when none will. Jobs due now
 * and still queued after a tick's pairing are targeted jobs whose worker has no idle slot:
 * no tick is scheduled for them, that worker's next offered slot wakes the dispatcher
 * (lib/dispatcher.ts wakeForSlot).
 */
async function nextRunAt(ctx: MutationCtx, now: number): Promise<number | null> {
  const heads = await Promise.all(
    QUEUED.map((status) =>
      ctx.db
        .query("jobs")
        .withIndex("by_status_runAt", (q) => q.eq("status", status).gt("runAt", now))
        .first(),
    ),
  );
  const due = heads.filter((job) => job !== null).map((job) => job.runAt);
  return due.length === 0 ? null : Math.min(...due);
}

/**
 * Assignments not accepted in time go back to the queue (the worker is gone or cut off:
 * its subscription shows the slot gone and it offers it again if alive), and slot rows
 * left naming a job that moved on (and no longer runs in them) are dropped. Returns how
 * many it handled.
 */
async function expireAssignments(ctx: MutationCtx, now: number): Promise<number> {
  const late = await ctx.db
    .query("jobs")
    .withIndex("by_status_leaseUntil", (q) => q.eq("status", "assigned").lt("leaseUntil", now))
    .take(DISPATCH_BATCH);
  for (const job of late) {
    const row = await ctx.db
      .query("workerSlots")
      .withIndex("by_worker_slot", (q) => q.eq("workerId", job.lockedBy ?? "").eq("slot", job.assignedSlot ?? -1))
      .unique();
    if (row !== null && row.jobId === job._id) await ctx.db.delete(row._id);
    await returnAssignment(ctx, job, now, `assignment not accepted in time (worker ${job.lockedBy ?? "unknown"})`);
  }
  const stale = await ctx.db
    .query("workerSlots")
    .withIndex("by_state_since", (q) => q.eq("state", "assigned").lt("since", now - MAX_ACCEPT_MS))
    .take(DISPATCH_BATCH);
  let dropped = 0;
  for (const row of stale) {
    const job = row.jobId === undefined ? null : await ctx.db.get(row.jobId);
    // A row naming the job its worker runs now stays until the job's final call.
    if (job !== null && isLeased(job.status) && job.lockedBy === row.workerId) continue;
    if (holdsAssignment(row, job)) await returnAssignment(ctx, job, now, "assignment not accepted in time");
    await ctx.db.delete(row._id);
    dropped++;
  }
  return late.length + dropped;
}

/** Hand `job` to `slot` (the worker accepts it with claimOne). */
async function pair(ctx: MutationCtx, job: Job, slot: Slot, now: number): Promise<void> {
  await setStatus(
    ctx,
    job,
    "assigned",
    { lockedBy: slot.workerId, assignedSlot: slot.slot, leaseUntil: now + slot.acceptMs },
    now,
  );
  await ctx.db.patch(slot._id, { state: "assigned", jobId: job._id, since: now });
}

/**
 * Pair due jobs with idle slots. A job targeted at one worker goes first, to that worker's
 * longest-idle slot, and to no other worker's (none idle: it waits, and that worker's next
 * offered slot wakes the dispatcher); then the other due jobs go to the idle slots left,
 * longest idle first. `dueLeft` counts only the untargeted jobs: a targeted one never
 * keeps the chain ticking for slots that are not its worker's.
 */
async function assignDue(
  ctx: MutationCtx,
  now: number,
): Promise<{ assigned: number; dueLeft: boolean; slotsLeft: boolean }> {
  let targeted = 0;
  for (const job of await dueTargeted(ctx, now)) {
    // Read again for each job: an earlier pairing of this tick may have taken a slot.
    const idle = (await slotsOf(ctx, job.targetWorkerId ?? ""))
      .filter((row) => row.state === "idle")
      .sort((a, b) => a.since - b.since);
    if (idle.length === 0) continue;
    await pair(ctx, job, idle[0], now);
    targeted++;
  }
  // The slots just paired are no longer idle (a transaction reads its own writes).
  const slots: Slot[] = await ctx.db
    .query("workerSlots")
    .withIndex("by_state_since", (q) => q.eq("state", "idle"))
    .take(DISPATCH_BATCH);
  // One more than can be paired: whether jobs remain due after this tick.
  const due = await dueJobs(ctx, now, slots.length + 1);
  const n = Math.min(slots.length, due.length);
  for (let i = 0; i < n; i++) await pair(ctx, due[i], slots[i], now);
  return {
    assigned: targeted + n,
    dueLeft: due.length > n,
    slotsLeft: slots.length > n || slots.length === DISPATCH_BATCH,
  };
}

const vTickResult = v.object({
  stale: v.boolean(),
  assigned: v.number(),
  expired: v.number(),
  reclaimed: v.number(),
  folded: v.number(),
  next: v.union(
    v.literal("now"),
    v.literal("backlog"),
    v.literal("linger"),
    v.literal("starved"),
    v.literal("sleeping"),
    v.literal("idle"),
    v.literal("none"),
  ),
});

/**
 * One tick of the chain of `epoch` (a newer epoch stops it). Upkeep first, then pairing;
 * then the next tick: at once while a batch was full, after a back-off while jobs wait for
 * a free slot, or none (sleeping until the next runAt, or idle) when nothing is due. A
 * chain that has handed out several jobs (a burst is arriving) lingers a little before it
 * parks: jobs still coming in then find it running, and none of them has to wake it (a
 * write of the dispatcher's row that every enqueue in flight would meet). `assigned`
 * counts the chain's assignments so far.
 */
export const tick = internalMutation({
  args: { epoch: v.number(), idleTicks: v.number(), assigned: v.optional(v.number()) },
  returns: vTickResult,
  handler: async (ctx, args) => {
    const state = await dispatcherState(ctx);
    const none = { stale: true, assigned: 0, expired: 0, reclaimed: 0, folded: 0, next: "none" as const };
    if (state === null || state.epoch !== args.epoch) return none;
    const now = Date.now();
    const expired = await expireAssignments(ctx, now);
    const reclaimed = (await reclaimExpiredLeases(ctx, now)).length;
    const folded = await rollupEvents(ctx, now - ROLLUP_SETTLE_MS, ROLLUP_BATCH);
    const { assigned, dueLeft, slotsLeft } = await assignDue(ctx, now);
    const upkeepLeft = expired >= DISPATCH_BATCH || reclaimed >= RECLAIM_BATCH || folded >= ROLLUP_BATCH;
    const result = { stale: false, assigned, expired, reclaimed, folded };
    const chainAssigned = Math.min((args.assigned ?? 0) + assigned, 1_000_000);
    const next = (delay: number, idleTicks: number) =>
      ctx.scheduler.runAfter(delay, internal.dispatch.tick, {
        epoch: args.epoch,
        idleTicks,
        assigned: chainAssigned,
      });
    if ((dueLeft && slotsLeft) || upkeepLeft) {
      await next(0, 0);
      return { ...result, next: "now" as const };
    }
    if (dueLeft) {
      // Jobs wait for a slot: a finishing worker offers its slot in its last call; look again
      // soon, less often while none frees up, and stop looking (starved) after a few empty
      // ticks: the next offered slot starts the chain again.
      const idleTicks = assigned > 0 ? 0 : args.idleTicks + 1;
      if (idleTicks > DISPATCH_STARVE_AFTER_TICKS) {
        await park(ctx, state, { starved: true }, now);
        return { ...result, next: "starved" as const };
      }
      await next(Math.min(DISPATCH_BACKLOG_MAX_MS, DISPATCH_BACKLOG_MS * 2 ** idleTicks), idleTicks);
      return { ...result, next: "backlog" as const };
    }
    const lingered = assigned > 0 ? 0 : args.idleTicks + 1;
    if (chainAssigned >= DISPATCH_LINGER_AFTER && lingered <= DISPATCH_LINGER_TICKS) {
      await next(DISPATCH_BACKLOG_MS * 2 ** lingered, lingered);
      return { ...result, next: "linger" as const };
    }
    const wakeAt = await nextRunAt(ctx, now);
    await park(ctx, state, { wakeAt }, now);
    return { ...result, next: wakeAt === null ? ("idle" as const) : ("sleeping" as const) };
  },
});

/**
 * Cron (crons.ts): the queue's upkeep runs at least this often, even when no job moves or
 * the dispatcher is starved: a tick now, unless one is running or due.
 */
export const maintain = internalMutation({
  args: {},
  returns: v.null(),
  handler: async (ctx) => {
    await tickNow(ctx, Date.now());
    return null;
  },
});
