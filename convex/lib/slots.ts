// Worker slots (the workerSlots table): a worker offers each free slot; the dispatcher
// assigns a due job to the longest-idle slot; the worker, told by its own subscription
// (jobs:assignments), accepts it (jobs:claimOne). The row keeps naming the job while it
// runs; the job's final call offers the slot again (idle). A worker reads and writes only
// its own rows, so claims never meet another worker's writes.
import type { Doc } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import { wakeForSlot } from "./dispatcher";
import { invalid } from "./errors";
import { setStatus, type Job, type ReclaimOutcome } from "./model";
import { MAX_ACCEPT_MS, MAX_WORKER_SLOTS, MIN_ACCEPT_MS } from "./policy";

export type Slot = Doc<"workerSlots">;

export function checkSlot(slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_WORKER_SLOTS) {
    invalid(`slot must be an integer from 0 to ${MAX_WORKER_SLOTS - 1}`);
  }
  return slot;
}

export function checkSlots(slots: number[]): number[] {
  if (slots.length === 0 || slots.length > MAX_WORKER_SLOTS) {
    invalid(`slots must list 1 to ${MAX_WORKER_SLOTS} slots`);
  }
  const checked = slots.map(checkSlot);
  if (new Set(checked).size !== checked.length) invalid("slots lists a slot twice");
  return checked;
}

export function checkAcceptMs(acceptMs: number): number {
  if (!Number.isFinite(acceptMs) || acceptMs < MIN_ACCEPT_MS || acceptMs > MAX_ACCEPT_MS) {
    invalid(`acceptMs must be between ${MIN_ACCEPT_MS} and ${MAX_ACCEPT_MS}`);
  }
  return Math.round(acceptMs);
}

export async function slotRow(ctx: QueryCtx, workerId: string, slot: number): Promise<Slot | null> {
  return await ctx.db
    .query("workerSlots")
    .withIndex("by_worker_slot", (q) => q.eq("workerId", workerId).eq("slot", slot))
    .unique();
}

export async function slotsOf(ctx: QueryCtx, workerId: string): Promise<Slot[]> {
  return await ctx.db
    .query("workerSlots")
    .withIndex("by_worker_slot", (q) => q.eq("workerId", workerId))
    .take(MAX_WORKER_SLOTS);
}

/**
 * The worker offers `slot` (free now). An idle row stays as it is (its place in the
 * longest-idle order); an assigned one is left for the worker to accept; a missing one is
 * added. Idempotent: a retried call writes nothing more.
 */
export async function offerSlot(
  ctx: MutationCtx,
  workerId: string,
  slot: number,
  acceptMs: number,
  now: number,
): Promise<Slot> {
  const row = await slotRow(ctx, workerId, slot);
  if (row !== null) {
    // Still naming the job that just ended in it (accepted jobs keep their row): idle again.
    if (row.state === "assigned") {
      const job = row.jobId === undefined ? null : await ctx.db.get(row.jobId);
      if (!holdsAssignment(row, job)) {
        await idleAgain(ctx, row, acceptMs, now);
        return { ...row, state: "idle", jobId: undefined, since: now, acceptMs };
      }
    }
    if (row.acceptMs !== acceptMs) await ctx.db.patch(row._id, { acceptMs });
    return { ...row, acceptMs };
  }
  const id = await ctx.db.insert("workerSlots", { workerId, slot, state: "idle", since: now, acceptMs });
  await wakeForSlot(ctx, workerId, now);
  return (await ctx.db.get(id))!;
}

/** Whether `job` is the assignment `row` holds (the dispatcher's pairing, still standing). */
export function holdsAssignment(row: Slot, job: Job | null): job is Job {
  return (
    job !== null &&
    row.state === "assigned" &&
    row.jobId === job._id &&
    job.status === "assigned" &&
    job.lockedBy === row.workerId &&
    job.assignedSlot === row.slot
  );
}

/** A slot row left assigned to a job that moved on becomes idle again. */
export async function idleAgain(ctx: MutationCtx, row: Slot, acceptMs: number, now: number): Promise<void> {
  await ctx.db.patch(row._id, { state: "idle", jobId: undefined, since: now, acceptMs });
  await wakeForSlot(ctx, row.workerId, now);
}

/**
 * An assignment goes back to the queue, where it was (its runAt keeps its place): the
 * attempt was never consumed. Canceled instead when a cancel came meanwhile.
 */
export async function returnAssignment(
  ctx: MutationCtx,
  job: Job,
  now: number,
  why: string,
): Promise<ReclaimOutcome> {
  if (job.cancelRequested) {
    await setStatus(ctx, job, "canceled", { releaseReason: why, lockedBy: undefined }, now);
    return "canceled";
  }
  await setStatus(ctx, job, "pending", { releaseReason: why, lockedBy: undefined }, now);
  return "pending";
}

/**
 * The worker takes `slots` (all of them when absent) out of dispatch: idle rows go, and a
 * job assigned to one and not accepted goes back to the queue. Returns how many jobs went
 * back.
 */
export async function withdrawSlots(
  ctx: MutationCtx,
  workerId: string,
  slots: number[] | undefined,
  now: number,
  why: string,
): Promise<{ withdrawn: number; returned: number }> {
  const keep = slots === undefined ? null : new Set(slots);
  let withdrawn = 0;
  let returned = 0;
  for (const row of await slotsOf(ctx, workerId)) {
    if (keep !== null && !keep.has(row.slot)) continue;
    if (row.state === "assigned" && row.jobId !== undefined) {
      const job = await ctx.db.get(row.jobId);
      if (holdsAssignment(row, job)) {
        await returnAssignment(ctx, job, now, why);
        returned++;
      }
    }
    await ctx.db.delete(row._id);
    withdrawn++;
  }
  return { withdrawn, returned };
}
