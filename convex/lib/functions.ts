// Worker-facing functions: `workerMutation` / `workerQuery` are `mutation` / `query` with
// the worker guard built in. Each adds the `token` argument every worker call carries
// (docs/CONTRACT.md), resolves it to the calling worker before the handler runs (UNAUTHORIZED
// otherwise) and hands the handler that identity: a per-worker credential bound to one worker
// id, or the shared WORKER_TOKEN of the migration period (lib/auth.ts).
//
// Binding rules, applied here so that every worker function gets them (one place to read):
//   - an argument `workerId` must be the credential's worker id (UNAUTHORIZED otherwise):
//     a worker claims and recovers only under its own id (jobs:claimOne, jobs:recoverWorker);
//   - a lease-fenced call (arguments `jobId` and `leaseToken`) on a job that exists must come
//     from the worker that holds it (job.lockedBy): LEASE_LOST otherwise, exactly as for a
//     lease the caller does not hold, so another worker's credential with a stolen lease
//     token learns nothing and changes nothing.
// The shared token names no worker: neither rule applies to it (its old, fleet-wide rights).
import {
  v,
  type GenericValidator,
  type Infer,
  type ObjectType,
  type PropertyValidators,
} from "convex/values";
import type { RegisteredMutation, RegisteredQuery } from "convex/server";
import { mutation, query, type MutationCtx, type QueryCtx } from "../_generated/server";
import { holdsJob, requireOwnWorkerId, requireWorker, type WorkerCaller } from "./auth";
import { fail } from "./errors";

const tokenArg = { token: v.optional(v.string()) };

/** What the handler receives: its own args, and the token already checked. */
type WorkerArgs<A extends PropertyValidators> = ObjectType<A> & { token?: string };

type WorkerFunction<Ctx, A extends PropertyValidators, R extends GenericValidator> = {
  args: A;
  returns: R;
  handler: (ctx: Ctx, args: WorkerArgs<A>, worker: WorkerCaller) => Promise<Infer<R>>;
};

/** The caller, checked against the binding rules above for these arguments. */
export async function checkWorkerCall(
  ctx: QueryCtx,
  args: Record<string, unknown>,
): Promise<WorkerCaller> {
  const worker = await requireWorker(ctx, typeof args.token === "string" ? args.token : undefined);
  if (worker.kind === "shared") return worker;
  if (typeof args.workerId === "string") requireOwnWorkerId(worker, args.workerId);
  if (typeof args.jobId === "string" && typeof args.leaseToken === "string") {
    const id = ctx.db.normalizeId("jobs", args.jobId);
    const job = id === null ? null : await ctx.db.get(id);
    // A job that does not exist is the handler's to report (NOT_FOUND).
    if (job !== null && !holdsJob(worker, job.lockedBy)) fail("LEASE_LOST", "lease lost");
  }
  return worker;
}

/** A mutation only a worker may call (its args plus `token`). */
export function workerMutation<A extends PropertyValidators, R extends GenericValidator>(
  fn: WorkerFunction<MutationCtx, A, R>,
): RegisteredMutation<"public", WorkerArgs<A>, Promise<Infer<R>>> {
  return mutation({
    // Widened to the untyped forms: the exact types are restored on the result below.
    args: { ...fn.args, ...tokenArg } as PropertyValidators,
    returns: fn.returns as GenericValidator,
    handler: async (ctx: MutationCtx, args: ObjectType<PropertyValidators>) => {
      const worker = await checkWorkerCall(ctx, args);
      return await fn.handler(ctx, args as WorkerArgs<A>, worker);
    },
  }) as unknown as RegisteredMutation<"public", WorkerArgs<A>, Promise<Infer<R>>>;
}

/** A query only a worker may call (its args plus `token`). */
export function workerQuery<A extends PropertyValidators, R extends GenericValidator>(
  fn: WorkerFunction<QueryCtx, A, R>,
): RegisteredQuery<"public", WorkerArgs<A>, Promise<Infer<R>>> {
  return query({
    // Widened to the untyped forms: the exact types are restored on the result below.
    args: { ...fn.args, ...tokenArg } as PropertyValidators,
    returns: fn.returns as GenericValidator,
    handler: async (ctx: QueryCtx, args: ObjectType<PropertyValidators>) => {
      const worker = await checkWorkerCall(ctx, args);
      return await fn.handler(ctx, args as WorkerArgs<A>, worker);
    },
  }) as unknown as RegisteredQuery<"public", WorkerArgs<A>, Promise<Infer<R>>>;
}
