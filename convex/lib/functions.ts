// Worker-facing functions: `workerMutation` / `workerQuery` are `mutation` / `query` with
// the worker-token guard built in. Each adds the `token` argument every worker call carries
// (docs/CONTRACT.md) and refuses the call (UNAUTHORIZED) unless it is a current worker token
// (WORKER_TOKEN or WORKER_TOKEN_NEXT), before the handler runs.
import {
  v,
  type GenericValidator,
  type Infer,
  type ObjectType,
  type PropertyValidators,
} from "convex/values";
import type { RegisteredMutation, RegisteredQuery } from "convex/server";
import { mutation, query, type MutationCtx, type QueryCtx } from "../_generated/server";
import { requireWorker } from "./auth";

const tokenArg = { token: v.optional(v.string()) };

/** What the handler receives: its own args, and the token already checked. */
type WorkerArgs<A extends PropertyValidators> = ObjectType<A> & { token?: string };

type WorkerFunction<Ctx, A extends PropertyValidators, R extends GenericValidator> = {
  args: A;
  returns: R;
  handler: (ctx: Ctx, args: WorkerArgs<A>) => Promise<Infer<R>>;
};

/** A mutation only a worker may call (its args plus `token`). */
export function workerMutation<A extends PropertyValidators, R extends GenericValidator>(
  fn: WorkerFunction<MutationCtx, A, R>,
): RegisteredMutation<"public", WorkerArgs<A>, Promise<Infer<R>>> {
  return mutation({
    // Widened to the untyped forms: the exact types are restored on the result below.
    args: { ...fn.args, ...tokenArg } as PropertyValidators,
    returns: fn.returns as GenericValidator,
    handler: async (ctx: MutationCtx, args: ObjectType<PropertyValidators>) => {
      const checked = args as WorkerArgs<A>;
      requireWorker(checked.token);
      return await fn.handler(ctx, checked);
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
      const checked = args as WorkerArgs<A>;
      requireWorker(checked.token);
      return await fn.handler(ctx, checked);
    },
  }) as unknown as RegisteredQuery<"public", WorkerArgs<A>, Promise<Infer<R>>>;
}
