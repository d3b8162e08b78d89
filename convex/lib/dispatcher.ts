// The dispatcher's state row and its kicks. One tick chain at a time pairs due jobs with
// idle worker slots (dispatch.ts). A mutation that makes a job due calls kickDispatcher; a
// worker offering a slot calls wakeForSlot; each schedules a tick only when none will run
// in time anyway. A job targeted at one worker (the rollout's smoke job) waits for that
// worker's slots: that worker offering a slot wakes the dispatcher. Only mode changes write
// the row: while a chain runs (a burst), every kick is a read.
import type { Doc } from "../_generated/dataModel";
import type { MutationCtx, QueryCtx } from "../_generated/server";
import { internal } from "../_generated/api";

export const DISPATCHER = "main";

export type DispatcherState = Doc<"dispatcher">;

export async function dispatcherState(ctx: QueryCtx): Promise<DispatcherState | null> {
  return await ctx.db
    .query("dispatcher")
    .withIndex("by_name", (q) => q.eq("name", DISPATCHER))
    .unique();
}

/** Whether a tick runs at `at` or earlier without being asked. */
function tickBy(state: DispatcherState | null, at: number): boolean {
  if (state?.mode === "active") return true;
  return state?.mode === "sleeping" && state.wakeAt !== undefined && state.wakeAt <= at;
}

/**
 * A job becomes due at `at`: make sure a tick runs then or earlier. While starved, no
 * tick would find a slot for it: the next offered slot starts the chain (wakeForSlot).
 */
export async function kickDispatcher(ctx: MutationCtx, at: number, now: number): Promise<void> {
  const state = await dispatcherState(ctx);
  if (tickBy(state, at) || state?.mode === "starved") return;
  await startEpoch(ctx, state, Math.max(at, now), now);
}

/**
 * A slot of `workerId` became idle: a starved dispatcher (jobs waiting for a slot) ticks
 * now, and so does one that would not tick by now while a job targeted at this worker is
 * due (it waits for this worker's slots only, and no tick is scheduled for it).
 */
export async function wakeForSlot(ctx: MutationCtx, workerId: string, now: number): Promise<void> {
  const state = await dispatcherState(ctx);
  if (state?.mode === "starved" || (!tickBy(state, now) && (await targetedDue(ctx, workerId, now)))) {
    await startEpoch(ctx, state, now, now);
  }
}

/**
 * Whether a queued job targeted at `workerId` is due by `now`. Reads only the index range of
 * this worker's targeted jobs: an offer never meets another worker's writes.
 */
export async function targetedDue(ctx: QueryCtx, workerId: string, now: number): Promise<boolean> {
  for (const status of ["pending", "failed"] as const) {
    const job = await ctx.db
      .query("jobs")
      .withIndex("by_status_target_runAt", (q) =>
        q.eq("status", status).eq("targetWorkerId", workerId).lte("runAt", now),
      )
      .first();
    if (job !== null) return true;
  }
  return false;
}

/** The queue's upkeep (the cron): a tick now unless one is running or due. */
export async function tickNow(ctx: MutationCtx, now: number): Promise<void> {
  const state = await dispatcherState(ctx);
  if (!tickBy(state, now)) await startEpoch(ctx, state, now, now);
}

/** A new tick chain at `when` (active if due now, else sleeping until then). */
async function startEpoch(
  ctx: MutationCtx,
  state: DispatcherState | null,
  when: number,
  now: number,
): Promise<void> {
  const epoch = (state?.epoch ?? 0) + 1;
  const row =
    when <= now
      ? { name: DISPATCHER, mode: "active" as const, epoch }
      : { name: DISPATCHER, mode: "sleeping" as const, epoch, wakeAt: when };
  if (state === null) await ctx.db.insert("dispatcher", row);
  else await ctx.db.replace(state._id, row);
  await ctx.scheduler.runAt(when, internal.dispatch.tick, { epoch, idleTicks: 0 });
}

/**
 * The chain ends: nothing is queued (idle), the next job is due at `wakeAt` (sleeping), or
 * jobs are due and no slot is free (starved).
 */
export async function park(
  ctx: MutationCtx,
  state: DispatcherState,
  next: { starved: true } | { wakeAt: number | null },
  now: number,
): Promise<void> {
  if ("starved" in next) {
    await ctx.db.replace(state._id, { name: DISPATCHER, mode: "starved", epoch: state.epoch + 1 });
  } else if (next.wakeAt === null) {
    await ctx.db.replace(state._id, { name: DISPATCHER, mode: "idle", epoch: state.epoch + 1 });
  } else {
    await startEpoch(ctx, state, next.wakeAt, now);
  }
}
