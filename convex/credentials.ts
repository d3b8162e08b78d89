// Per-worker credentials (docs/SECURITY.md, "One credential per worker"). Each worker
// replica calls Convex with a credential of its own, bound to its worker id: it claims,
// reports on and recovers only that worker's jobs (lib/functions.ts). Operators issue, list
// and revoke them with the operator token (`fondation-worker credentials ...`, the deploy,
// playbooks/runbook-credentials.yml). docs/CONTRACT.md is the wire contract.
//
// The secret never reaches these functions: whoever issues it (the CLI on the operator's
// machine, the deploy on the worker host) draws it from a CSPRNG and sends only its SHA-256.
// Convex keeps only that hash; a worker's call is matched by hashing the token it presents.
import { v } from "convex/values";
import type { Doc } from "./_generated/dataModel";
import { mutation, query, type MutationCtx } from "./_generated/server";
import { withdrawSlots } from "./lib/slots";
import { requireOperator } from "./lib/auth";
import { workerQuery } from "./lib/functions";
import { fail, invalid } from "./lib/errors";

/** The worker's own rule for WORKER_ID (worker/fondation_worker/config.py). */
const WORKER_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** An inventory host name (a label for revoking a whole host at once). */
const HOST = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Rows one call reads at most: a host runs at most 32 replicas, rotations add revoked rows. */
export const CREDENTIALS_MAX_ROWS = 1_000;
export const LIST_DEFAULT_LIMIT = 200;

type Credential = Doc<"workerCredentials">;

const vCredential = v.object({
  credentialId: v.string(),
  workerId: v.string(),
  host: v.union(v.string(), v.null()),
  // the first 12 hex digits of the secret's SHA-256: `printf %s "$token" | sha256sum`
  fingerprint: v.string(),
  createdAt: v.number(),
  revokedAt: v.union(v.number(), v.null()),
});

function view(row: Credential) {
  return {
    credentialId: row._id as string,
    workerId: row.workerId,
    host: row.host ?? null,
    fingerprint: row.secretHash.slice(0, 12),
    createdAt: row.createdAt,
    revokedAt: row.revokedAt ?? null,
  };
}

function checkWorkerId(workerId: string): string {
  if (!WORKER_ID.test(workerId)) {
    invalid("workerId must be 1-128 characters of letters, digits, '.', '_', ':' or '-'");
  }
  return workerId;
}

function checkHost(host: string): string {
  if (!HOST.test(host)) invalid("host must be a host name (letters, digits, '.', '_', ':' or '-')");
  return host;
}

async function activeOf(ctx: MutationCtx, workerId: string): Promise<Credential[]> {
  const rows = await ctx.db
    .query("workerCredentials")
    .withIndex("by_workerId", (q) => q.eq("workerId", workerId))
    .take(CREDENTIALS_MAX_ROWS);
  return rows.filter((row) => row.revokedAt === undefined);
}

/**
 * Issue a credential for `workerId`: register the SHA-256 of a secret the caller drew. One
 * credential is active per worker id, so issuing also revokes that worker's previous ones
 * (`replaced` counts them): a rotation is one call, then a restart of that worker. Repeating
 * the call with the same hash changes nothing (`created: false`), which makes the deploy's
 * "ensure this host's credential is registered" idempotent. A hash that was revoked, or that
 * is bound to another worker id, is refused (INVALID_STATE): draw a new secret.
 */
export const issue = mutation({
  args: {
    token: v.optional(v.string()),
    workerId: v.string(),
    secretHash: v.string(),
    host: v.optional(v.string()),
  },
  returns: v.object({ credential: vCredential, created: v.boolean(), replaced: v.number() }),
  handler: async (ctx, args) => {
    requireOperator(args.token);
    const workerId = checkWorkerId(args.workerId);
    const host = args.host === undefined ? undefined : checkHost(args.host);
    if (!SHA256_HEX.test(args.secretHash)) invalid("secretHash must be 64 lower-case hex digits (SHA-256)");
    const existing = await ctx.db
      .query("workerCredentials")
      .withIndex("by_secretHash", (q) => q.eq("secretHash", args.secretHash))
      .unique();
    if (existing !== null) {
      if (existing.revokedAt !== undefined) {
        fail("INVALID_STATE", `this credential of worker ${existing.workerId} was revoked: issue a new secret`);
      }
      if (existing.workerId !== workerId) {
        fail("INVALID_STATE", `this credential belongs to worker ${existing.workerId}, not ${workerId}`);
      }
      return { credential: view(existing), created: false, replaced: 0 };
    }
    const now = Date.now();
    const previous = await activeOf(ctx, workerId);
    for (const row of previous) await ctx.db.patch(row._id, { revokedAt: now });
    const id = await ctx.db.insert("workerCredentials", {
      workerId,
      ...(host !== undefined ? { host } : {}),
      secretHash: args.secretHash,
      createdAt: now,
    });
    const row = (await ctx.db.get(id))!;
    return { credential: view(row), created: true, replaced: previous.length };
  },
});

/**
 * The credentials, newest first: the active ones, and with `includeRevoked` the revoked ones
 * too; only one worker's (`workerId`) or one host's (`host`) when given. Never a secret:
 * each shows the first 12 hex digits of its hash.
 */
export const list = query({
  args: {
    token: v.optional(v.string()),
    workerId: v.optional(v.string()),
    host: v.optional(v.string()),
    includeRevoked: v.optional(v.boolean()),
    limit: v.optional(v.number()),
  },
  returns: v.array(vCredential),
  handler: async (ctx, args) => {
    requireOperator(args.token);
    const requested = args.limit !== undefined && Number.isFinite(args.limit) ? args.limit : LIST_DEFAULT_LIMIT;
    const limit = Math.min(Math.max(Math.floor(requested), 1), CREDENTIALS_MAX_ROWS);
    const workerId = args.workerId;
    const host = args.host;
    let rows: Credential[];
    if (workerId !== undefined) {
      rows = await ctx.db
        .query("workerCredentials")
        .withIndex("by_workerId", (q) => q.eq("workerId", workerId))
        .take(CREDENTIALS_MAX_ROWS);
    } else if (host !== undefined) {
      rows = await ctx.db
        .query("workerCredentials")
        .withIndex("by_host", (q) => q.eq("host", host))
        .take(CREDENTIALS_MAX_ROWS);
    } else {
      rows = await ctx.db.query("workerCredentials").order("desc").take(CREDENTIALS_MAX_ROWS);
    }
    return rows
      .filter((row) => args.includeRevoked === true || row.revokedAt === undefined)
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(0, limit)
      .map(view);
  },
});

/**
 * Revoke the active credentials of one worker (`workerId`), of every worker of one host
 * (`host`), or one credential (`credentialId`): exactly one of the three. From the next call
 * on, the worker is refused (UNAUTHORIZED) everywhere: it claims nothing, its heartbeats fail
 * and its in-flight job returns to the queue when the lease expires (the reclaim cron), as
 * for a worker that died. Other workers' credentials are not touched. Repeating it changes
 * nothing (`revoked` is then empty).
 */
export const revoke = mutation({
  args: {
    token: v.optional(v.string()),
    workerId: v.optional(v.string()),
    host: v.optional(v.string()),
    credentialId: v.optional(v.string()),
  },
  returns: v.object({ revoked: v.array(vCredential) }),
  handler: async (ctx, args) => {
    requireOperator(args.token);
    const selectors = [args.workerId, args.host, args.credentialId].filter((s) => s !== undefined);
    if (selectors.length !== 1) invalid("name exactly one of workerId, host and credentialId");
    let rows: Credential[] = [];
    if (args.credentialId !== undefined) {
      const id = ctx.db.normalizeId("workerCredentials", args.credentialId);
      const row = id === null ? null : await ctx.db.get(id);
      if (row === null) fail("NOT_FOUND", "no such credential");
      rows = [row];
    } else if (args.workerId !== undefined) {
      rows = await activeOf(ctx, checkWorkerId(args.workerId));
    } else if (args.host !== undefined) {
      const host = checkHost(args.host);
      rows = await ctx.db
        .query("workerCredentials")
        .withIndex("by_host", (q) => q.eq("host", host))
        .take(CREDENTIALS_MAX_ROWS);
    }
    const now = Date.now();
    const revoked: Credential[] = [];
    for (const row of rows) {
      if (row.revokedAt !== undefined) continue;
      await ctx.db.patch(row._id, { revokedAt: now });
      revoked.push({ ...row, revokedAt: now });
      // Its slots leave dispatch at once: a job assigned to a worker that can no longer
      // accept it goes back unspent, instead of waiting for the slot's acceptMs.
      await withdrawSlots(ctx, row.workerId, undefined, now, `worker ${row.workerId}'s credential revoked`);
    }
    return { revoked: revoked.map(view) };
  },
});

/**
 * Who the calling worker is: its credential's worker id, or `shared` for the shared token
 * (`fondation-worker check` compares it with WORKER_ID). Refused like every worker call
 * when the credential is unknown or revoked.
 */
export const whoami = workerQuery({
  args: {},
  returns: v.union(
    v.object({ kind: v.literal("credential"), workerId: v.string(), credentialId: v.string() }),
    v.object({ kind: v.literal("shared") }),
  ),
  handler: async (_ctx, _args, worker) => {
    if (worker.kind === "shared") return { kind: "shared" as const };
    return { kind: "credential" as const, workerId: worker.workerId, credentialId: worker.credentialId as string };
  },
});
