// Who is calling: the worker (shared token) or a web-app user (Convex identity).
import type { Auth } from "convex/server";
import { constantTimeEqual } from "./policy";
import { unauthorized } from "./errors";

// Longer tokens are refused before comparing (bounds the work an attacker can cause).
const MAX_TOKEN_CHARS = 4_096;

/** True when `token` equals the WORKER_TOKEN environment variable (constant time). */
export function isWorkerToken(token: string | undefined): boolean {
  const expected = process.env.WORKER_TOKEN;
  if (expected === undefined || expected.length === 0) return false;
  if (token === undefined || token.length > MAX_TOKEN_CHARS) return false;
  return constantTimeEqual(token, expected);
}

/** Every worker-facing function starts here. */
export function requireWorker(token: string | undefined): void {
  if (!isWorkerToken(token)) unauthorized();
}

export type Caller = { kind: "operator"; userId: string } | { kind: "user"; userId: string };

/**
 * Client-facing functions: a worker token (operator; `userId` names the user, default
 * "operator") or a Convex identity (the user is identity.subject, `userId` ignored).
 * A token that is given but wrong is refused even when an identity is present.
 */
export async function requireCaller(
  auth: Auth,
  token: string | undefined,
  userId: string | undefined,
): Promise<Caller> {
  if (token !== undefined) {
    if (!isWorkerToken(token)) unauthorized();
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
