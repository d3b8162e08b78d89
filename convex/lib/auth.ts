// Who is calling: a worker (its own credential, or the shared worker token during the
// migration), an operator (operator token) or a web-app user (Convex identity). Every
// function checks its caller through the helpers below.
import type { Auth } from "convex/server";
import type { Id } from "../_generated/dataModel";
import type { QueryCtx } from "../_generated/server";
import { constantTimeEqual } from "./policy";
import { fail, unauthorized } from "./errors";
import { sha256Hex } from "./sha256";

// Longer tokens are refused before comparing (bounds the work an attacker can cause).
const MAX_TOKEN_CHARS = 4_096;

/**
 * True when `token` equals one of the named environment variables (constant time). Each
 * credential has a `_NEXT` twin so it can be rotated without downtime: both values are
 * accepted while clients move to the new one.
 */
function matchesEnv(token: string | undefined, names: readonly string[]): boolean {
  if (token === undefined || token.length > MAX_TOKEN_CHARS) return false;
  let ok = false;
  for (const name of names) {
    const expected = process.env[name];
    // no early exit: the time does not tell which variable matched
    if (expected !== undefined && expected.length > 0 && constantTimeEqual(token, expected)) ok = true;
  }
  return ok;
}

const WORKER_VARS = ["WORKER_TOKEN", "WORKER_TOKEN_NEXT"] as const;
const OPERATOR_VARS = ["OPERATOR_TOKEN", "OPERATOR_TOKEN_NEXT"] as const;

/**
 * True when `token` is the shared worker token (WORKER_TOKEN or WORKER_TOKEN_NEXT). Kept for
 * the migration to per-worker credentials only (docs/SECURITY.md, "One credential per
 * worker"): a deployment without WORKER_TOKEN accepts no shared token at all.
 */
export function isWorkerToken(token: string | undefined): boolean {
  return matchesEnv(token, WORKER_VARS);
}

// ---------------------------------------------------------------- per-worker credentials

/** Every per-worker credential starts with this (and the shared token never may). */
export const CREDENTIAL_PREFIX = "fwc_";
/** A credential is the prefix and 43 base64url characters (32 random bytes). */
export const CREDENTIAL_PATTERN = /^fwc_[A-Za-z0-9_-]{43}$/;

/** SHA-256 (hex) of a credential: the only form Convex stores (table workerCredentials). */
export function credentialHash(token: string): string {
  return sha256Hex(token);
}

/**
 * Who a worker call comes from. `credential`: a per-worker credential, bound to `workerId`:
 * the caller claims, reports on and recovers only that worker's jobs. `shared`: the shared
 * WORKER_TOKEN of the migration period, which names no worker (the old, fleet-wide rights).
 */
export type WorkerCaller =
  | { kind: "credential"; workerId: string; credentialId: Id<"workerCredentials"> }
  | { kind: "shared" };

/**
 * The caller behind `token`, or null. A credential is looked up by the SHA-256 of the whole
 * value (an index read; the secret has 256 random bits, so an unsalted hash is enough and
 * the lookup's timing reveals nothing usable); a revoked one is refused. Reading the row puts
 * it in the call's read set: a revocation conflicts with calls in flight, and a subscribed
 * query (jobs:wakeup) is re-run and refused.
 */
export async function resolveWorker(
  ctx: QueryCtx,
  token: string | undefined,
): Promise<WorkerCaller | null> {
  if (token === undefined || token.length > MAX_TOKEN_CHARS) return null;
  if (token.startsWith(CREDENTIAL_PREFIX)) {
    if (!CREDENTIAL_PATTERN.test(token)) return null;
    const row = await ctx.db
      .query("workerCredentials")
      .withIndex("by_secretHash", (q) => q.eq("secretHash", credentialHash(token)))
      .unique();
    if (row === null || row.revokedAt !== undefined) return null;
    return { kind: "credential", workerId: row.workerId, credentialId: row._id };
  }
  return isWorkerToken(token) ? { kind: "shared" } : null;
}

/**
 * A credential bound to another worker id is refused (UNAUTHORIZED: an operator must fix
 * WORKER_ID or the credential). The shared token names no worker and passes.
 */
export function requireOwnWorkerId(worker: WorkerCaller, workerId: string): void {
  if (worker.kind === "credential" && worker.workerId !== workerId) {
    fail("UNAUTHORIZED", `this credential belongs to worker ${worker.workerId}, not ${workerId}`);
  }
}

/**
 * True when `worker` may act on a job held by `lockedBy`: its own credential's worker id, or
 * the shared token (which names no worker). Lease-fenced calls answer LEASE_LOST otherwise,
 * as for any lease the caller does not hold.
 */
export function holdsJob(worker: WorkerCaller, lockedBy: string | undefined): boolean {
  return worker.kind === "shared" || (lockedBy !== undefined && lockedBy === worker.workerId);
}

/**
 * True when `token` is a current operator token (OPERATOR_TOKEN or OPERATOR_TOKEN_NEXT).
 * Nothing else ever carries operator rights: not the worker token, whether or not an
 * operator token is configured.
 */
export function isOperatorToken(token: string | undefined): boolean {
  return matchesEnv(token, OPERATOR_VARS);
}

/** True when the deployment has an operator token (OPERATOR_TOKEN or OPERATOR_TOKEN_NEXT). */
export function operatorTokenConfigured(): boolean {
  return OPERATOR_VARS.some((name) => (process.env[name] ?? "").length > 0);
}

/** Every worker-facing function starts here: the caller, or UNAUTHORIZED. */
export async function requireWorker(ctx: QueryCtx, token: string | undefined): Promise<WorkerCaller> {
  const worker = await resolveWorker(ctx, token);
  if (worker === null) unauthorized();
  return worker;
}

/**
 * Operator functions (operator.ts, the operator branch of requireCaller: the CLI's operator
 * commands, the runbook plays). Fail-closed: only OPERATOR_TOKEN / OPERATOR_TOKEN_NEXT are
 * accepted. A deployment without either refuses every operator call (and says so: nothing
 * to guess there), and a value that is also a worker token is refused, so a worker host
 * never holds operator rights even when both variables were set to one value by mistake.
 */
export function requireOperator(token: string | undefined): void {
  if (!operatorTokenConfigured()) {
    fail(
      "UNAUTHORIZED",
      "no operator token is configured on this deployment: set OPERATOR_TOKEN " +
        "(npx convex env set OPERATOR_TOKEN <value>); the worker token has no operator rights",
    );
  }
  if (!isOperatorToken(token)) unauthorized();
  if (isWorkerToken(token)) {
    fail(
      "UNAUTHORIZED",
      "OPERATOR_TOKEN equals the worker token: give OPERATOR_TOKEN a value of its own",
    );
  }
}

const SCRAPE_VARS = ["METRICS_SCRAPE_TOKEN", "METRICS_SCRAPE_TOKEN_NEXT"] as const;

export type ScrapeCheck = "ok" | "not_configured" | "refused";

/**
 * The Prometheus endpoint (http.ts `GET /metrics`): its own credential, METRICS_SCRAPE_TOKEN
 * (or _NEXT during a rotation), sent as `Authorization: Bearer <token>`. Fail-closed: unset,
 * every scrape is refused. A worker or operator token is never a scrape token, even when a
 * scrape variable was set to the same value by mistake: a Prometheus server holds this
 * token in a file, and it must not open the queue to whoever reads that file.
 */
export function checkScrapeToken(token: string | undefined): ScrapeCheck {
  if (!SCRAPE_VARS.some((name) => (process.env[name] ?? "").length > 0)) return "not_configured";
  if (!matchesEnv(token, SCRAPE_VARS)) return "refused";
  if (isWorkerToken(token) || isOperatorToken(token)) return "refused";
  return "ok";
}

/** Aggregate queue metrics (counts only): readable by workers (`fondation-worker check`) and operators. */
export async function requireWorkerOrOperator(ctx: QueryCtx, token: string | undefined): Promise<void> {
  if (isOperatorToken(token)) return;
  if ((await resolveWorker(ctx, token)) === null) unauthorized();
}

export type Caller = { kind: "operator"; userId: string } | { kind: "user"; userId: string };

/**
 * Client-facing functions: an operator token (`userId` names the user, default
 * "operator") or a Convex identity (the user is identity.subject, `userId` ignored).
 * A token that is given but wrong is refused even when an identity is present.
 */
export async function requireCaller(
  auth: Auth,
  token: string | undefined,
  userId: string | undefined,
): Promise<Caller> {
  if (token !== undefined) {
    requireOperator(token);
    return { kind: "operator", userId: userId ?? "operator" };
  }
  const identity = await auth.getUserIdentity();
  if (identity === null) unauthorized();
  return { kind: "user", userId: identity.subject };
}

/** Operators see every job; users see their own. */
export function canSee(caller: Caller, jobUserId: string): boolean {
  return caller.kind === "operator" || caller.userId === jobUserId;
}
