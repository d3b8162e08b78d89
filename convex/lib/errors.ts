import { ConvexError } from "convex/values";

/** The error codes of docs/CONTRACT.md. */
export type ErrorCode =
  | "UNAUTHORIZED"
  | "LEASE_LOST"
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "INVALID_STATE";

export function fail(code: ErrorCode, message: string): never {
  throw new ConvexError({ code, message });
}

export function unauthorized(): never {
  // Reveals nothing: not whether the token was missing, wrong, or not configured.
  return fail("UNAUTHORIZED", "unauthorized");
}

export function invalid(message: string): never {
  return fail("INVALID_ARGUMENT", message);
}

/** Unwrap a validation result or throw INVALID_ARGUMENT. */
export function must<T>(r: { ok: true; value: T } | { ok: false; error: string }): T {
  if (!r.ok) return invalid(r.error);
  return r.value;
}
