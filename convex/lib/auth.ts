// Who is calling: a worker (worker token), an operator (operator token) or a web-app user
// (Convex identity). Every function checks its caller through the helpers below.
import type { Auth } from "convex/server";
import { constantTimeEqual } from "./policy";
import { fail, unauthorized } from "./errors";

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

/** True when `token` is a current worker token (WORKER_TOKEN or WORKER_TOKEN_NEXT). */
export function isWorkerToken(token: string | undefined): boolean {
  return matchesEnv(token, WORKER_VARS);
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

/** Every worker-facing function starts here. */
export function requireWorker(token: string | undefined): void {
  if (!isWorkerToken(token)) unauthorized();
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
export function requireWorkerOrOperator(token: string | undefined): void {
  if (!isWorkerToken(token) && !isOperatorToken(token)) unauthorized();
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
