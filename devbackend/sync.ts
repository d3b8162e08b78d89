// Convex's WebSocket sync protocol, the subset the official clients use (JS ConvexClient,
// `useQuery`, and the Rust core of the Python `convex` client): Connect, Authenticate,
// ModifyQuerySet, Mutation, Action, Event from the client; Transition, MutationResponse,
// ActionResponse, AuthError, FatalError and Ping from the server. Wire formats as in
// convex-js src/browser/sync/protocol.ts and convex-rs sync_types/src/types/json.rs.
//
// A subscribed query is re-run only when a committed write touches what it read (its read
// set, recorded by the backend: occ.ts), as Convex does, and a Transition carries only the
// results that changed. A connection that sent a mutation always gets a Transition at or
// past the mutation's timestamp: the clients resolve the mutation only once they have seen it.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { convexToJson, jsonToConvex, type Value } from "convex/values";
import { WebSocketServer, type WebSocket } from "ws";
import type { Identity } from "./auth";
import type { Backend, CallResult, Kind } from "./backend";
import { intersects, type ReadSet, type WriteSet } from "./occ";

/** Both clients' paths: JS `/api/<client version>/sync`, Rust/Python `/api/sync`. */
export const SYNC_PATH = /^\/api\/(?:[0-9][A-Za-z0-9.+-]*\/)?sync$/;

// The Rust client gives up on a server silent for 30 s, the JS client after 60 s.
const PING_MS = Number(process.env.SYNC_PING_MS ?? "10000");
const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;
const MAX_QUERIES = 1000;

type Resolve = (path: string) => Promise<{ kind: Kind; path: string } | null>;
type Authenticate = (token: string) => Promise<Identity>;
type Log = (line: string) => void;

// reads: what the last run read (null: never ran); stale: a commit touched it since.
type Query = { udfPath: string; args: Record<string, unknown>; last: string | null; reads: ReadSet | null; stale: boolean };
type Mod = Record<string, unknown>;

class ProtocolError extends Error {}

/** A u64 as the protocol sends it: 8 bytes little-endian, base64. */
export function encodeTs(ts: bigint): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(ts);
  return b.toString("base64");
}

/**
 * A message as JSON text. Convex values (query results, mutation results, error data) are
 * written with every number as a float (`3.0`) the way Convex's Rust serializer does: the
 * Python client reads an integer-looking number inside a value as an int64 and refuses it.
 * Protocol fields (ids, versions) stay integers, which the Rust client requires.
 */
function messageText(msg: Record<string, unknown>, floatJson: (v: unknown) => string): string {
  const values: unknown[] = [];
  const mark = (v: unknown) => `\u0000V${values.push(v) - 1}`;
  const wrap = (m: Mod): Mod => {
    const out = { ...m };
    for (const key of ["value", "result", "errorData"]) {
      if (key in out && out[key] !== undefined && !(key === "result" && out.success === false)) out[key] = mark(out[key]);
    }
    return out;
  };
  const outer = wrap(msg);
  if (Array.isArray(outer.modifications)) outer.modifications = (outer.modifications as Mod[]).map(wrap);
  return JSON.stringify(outer).replace(/"\\u0000V(\d+)"/g, (_, i: string) => floatJson(values[Number(i)]));
}

function argsOf(raw: unknown): Record<string, unknown> {
  const list = Array.isArray(raw) ? raw : [raw ?? {}];
  if (list.length !== 1 || list[0] === null || typeof list[0] !== "object" || Array.isArray(list[0])) {
    throw new ProtocolError("args must be [object]");
  }
  return jsonToConvex(list[0] as never) as Record<string, unknown>;
}

class Session {
  private identity: Identity | undefined;
  private identityVersion = 0;
  private querySet = 0;
  private ts = 0n; // the endVersion.ts last sent
  private readonly queries = new Map<number, Query>();
  private chain: Promise<void> = Promise.resolve();
  private refreshQueued = false;
  alive = true; // answered the last WebSocket ping
  frozen = false; // backend paused in "hang" mode: no replies, no pings
  readonly opened = Date.now();

  constructor(
    readonly id: number,
    readonly ws: WebSocket,
    private readonly hub: SyncHub,
  ) {}

  /** Messages are handled one at a time per connection, in order. */
  enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((e: unknown) => {
      const message = e instanceof Error ? e.message : String(e);
      this.hub.log(`sync #${this.id} FatalError ${message}`);
      this.send({ type: "FatalError", error: message });
      this.ws.close(1011, "FatalError");
    });
  }

  send(msg: Record<string, unknown>): void {
    if (this.frozen || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(messageText(msg, this.hub.floatJson));
  }

  onMessage(text: string): void {
    if (this.frozen) return;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.enqueue(async () => {
        throw new ProtocolError("message is not JSON");
      });
      return;
    }
    this.enqueue(() => this.handle(msg));
  }

  private async handle(msg: Record<string, unknown>): Promise<void> {
    switch (msg.type) {
      case "Connect":
      case "Event":
        return;
      case "Authenticate":
        return await this.authenticate(msg);
      case "ModifyQuerySet":
        return await this.modifyQuerySet(msg);
      case "Mutation":
      case "Action":
        return await this.request(msg);
      default:
        throw new ProtocolError(`unknown message type ${String(msg.type)}`);
    }
  }

  private async authenticate(msg: Record<string, unknown>): Promise<void> {
    const baseVersion = Number(msg.baseVersion);
    if (baseVersion !== this.identityVersion) {
      throw new ProtocolError(`Authenticate baseVersion ${baseVersion}, expected ${this.identityVersion}`);
    }
    let identity: Identity | undefined;
    if (msg.tokenType === "User" && typeof msg.value === "string") {
      try {
        identity = await this.hub.authenticate(msg.value);
      } catch (e) {
        this.send({
          type: "AuthError",
          error: e instanceof Error ? e.message : String(e),
          baseVersion,
          authUpdateAttempted: true,
        });
        return;
      }
    } else if (msg.tokenType !== "None") {
      // Admin keys belong to a real deployment's dashboard and CLI, not to this stand-in.
      this.send({ type: "AuthError", error: `tokenType ${String(msg.tokenType)} is not accepted here`, baseVersion, authUpdateAttempted: true });
      return;
    }
    const start = this.version();
    this.identity = identity;
    this.identityVersion = baseVersion + 1;
    // The identity changed: every result may have.
    for (const q of this.queries.values()) {
      q.last = null;
      q.stale = true;
    }
    await this.transition(start, []);
  }

  private async modifyQuerySet(msg: Record<string, unknown>): Promise<void> {
    if (Number(msg.baseVersion) !== this.querySet) {
      throw new ProtocolError(`ModifyQuerySet baseVersion ${String(msg.baseVersion)}, expected ${this.querySet}`);
    }
    const start = this.version();
    const removed: Mod[] = [];
    for (const m of (msg.modifications ?? []) as Mod[]) {
      const queryId = Number(m.queryId);
      if (m.type === "Add") {
        if (this.queries.size >= MAX_QUERIES) throw new ProtocolError(`more than ${MAX_QUERIES} queries`);
        this.queries.set(queryId, { udfPath: String(m.udfPath), args: argsOf(m.args), last: null, reads: null, stale: true });
      } else if (m.type === "Remove") {
        if (this.queries.delete(queryId)) removed.push({ type: "QueryRemoved", queryId });
      } else {
        throw new ProtocolError(`unknown query set modification ${String(m.type)}`);
      }
    }
    this.querySet = Number(msg.newVersion);
    await this.transition(start, removed);
  }

  private async request(msg: Record<string, unknown>): Promise<void> {
    const requestId = Number(msg.requestId);
    const kind: Kind = msg.type === "Mutation" ? "mutation" : "action";
    const responseType = kind === "mutation" ? "MutationResponse" : "ActionResponse";
    const path = String(msg.udfPath);
    const target = await this.hub.resolve(path);
    let result: CallResult;
    if (target === null) {
      result = { ok: false, message: `Could not find public function for '${path}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?` };
    } else if (target.kind !== kind) {
      result = { ok: false, message: `Trying to execute ${target.path} as ${kind}, but it is defined as ${target.kind}.` };
    } else {
      result = await this.hub.backend.call(kind, target.path, argsOf(msg.args), this.identity);
    }
    const outcome = result.ok ? "success" : "error";
    this.hub.log(`sync #${this.id} ${msg.type} ${target?.path ?? path} ${outcome}`);
    if (result.ok) {
      const ts = kind === "mutation" ? this.hub.commit() : undefined;
      this.send({
        type: responseType,
        requestId,
        success: true,
        result: convexToJson((result.value ?? null) as Value),
        ...(ts !== undefined ? { ts: encodeTs(ts) } : {}),
        logLines: [],
      });
      // The backend told every session of the commit (ours refreshes below).
    } else {
      this.send({
        type: responseType,
        requestId,
        success: false,
        result: result.message,
        logLines: [],
        ...(result.data !== undefined ? { errorData: convexToJson(result.data as Value) } : {}),
      });
    }
    // A Transition at or past the response, whatever the outcome: the Rust client settles a
    // mutation that failed with a ConvexError only when it sees one.
    await this.transition(this.version(), [], true);
  }

  /** Mark the queries a commit touched; true when one needs a re-run. */
  invalidate(writes: WriteSet | "all"): boolean {
    let any = false;
    for (const q of this.queries.values()) {
      if (q.stale || writes === "all" || q.reads === null || intersects(q.reads, writes)) {
        q.stale = true;
        any = true;
      } else {
        this.hub.counters.skipped++;
      }
    }
    return any;
  }

  /** Re-run after a commit (coalesced: one pending refresh at a time). */
  scheduleRefresh(): void {
    if (this.refreshQueued) return;
    this.refreshQueued = true;
    this.enqueue(async () => {
      this.refreshQueued = false;
      await this.transition(this.version(), []);
    });
  }

  private version(): Mod {
    return { querySet: this.querySet, identity: this.identityVersion, ts: encodeTs(this.ts) };
  }

  /**
   * Run every query a commit touched (or never run) and send one Transition with what
   * changed. Nothing to say and not `always`: no message (an idle subscriber hears only Pings).
   */
  private async transition(start: Mod, extra: Mod[], always = false): Promise<void> {
    const mods: Mod[] = [...extra];
    for (const [queryId, q] of this.queries) {
      if (!q.stale) continue;
      q.stale = false;
      const mod = await this.run(queryId, q);
      if (mod !== null) mods.push(mod);
    }
    const versionChanged = start.querySet !== this.querySet || start.identity !== this.identityVersion;
    if (mods.length === 0 && !versionChanged && !always) return;
    if (mods.length > 0) this.hub.counters.pushes++;
    const now = this.hub.now();
    this.ts = now > this.ts ? now : this.ts;
    this.send({ type: "Transition", startVersion: start, endVersion: this.version(), modifications: mods });
  }

  private async run(queryId: number, q: Query): Promise<Mod | null> {
    const target = await this.hub.resolve(q.udfPath);
    let result: CallResult;
    if (target === null) {
      result = { ok: false, message: `Could not find public function for '${q.udfPath}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?` };
    } else if (target.kind !== "query") {
      result = { ok: false, message: `Trying to execute ${target.path} as query, but it is defined as ${target.kind}.` };
    } else {
      result = await this.hub.backend.call("query", target.path, q.args, this.identity, { subscription: true });
      this.hub.counters.runs++;
    }
    // A failed query reads nothing we know of: re-run it after any commit.
    q.reads = result.ok ? (result.reads ?? null) : null;
    const mod: Mod = result.ok
      ? { type: "QueryUpdated", queryId, value: convexToJson((result.value ?? null) as Value), logLines: [], journal: null }
      : {
          type: "QueryFailed",
          queryId,
          errorMessage: result.message,
          logLines: [],
          journal: null,
          ...(result.data !== undefined ? { errorData: convexToJson(result.data as Value) } : {}),
        };
    const key = JSON.stringify(mod);
    if (key === q.last) return null;
    q.last = key;
    return mod;
  }
}

export class SyncHub {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
  private readonly sessions = new Set<Session>();
  private lastTs = 0n;
  private nextId = 1;
  private readonly pinger: NodeJS.Timeout;

  constructor(
    readonly backend: Backend,
    readonly resolve: Resolve,
    readonly authenticate: Authenticate,
    readonly floatJson: (v: unknown) => string,
    readonly log: Log,
  ) {
    this.pinger = setInterval(() => this.ping(), PING_MS);
    this.pinger.unref();
  }

  get connections(): number {
    return this.sessions.size;
  }

  /** A database timestamp (ns), strictly increasing. */
  now(): bigint {
    const wall = BigInt(Date.now()) * 1_000_000n;
    this.lastTs = wall > this.lastTs ? wall : this.lastTs + 1n;
    return this.lastTs;
  }

  /** A commit's timestamp. */
  commit(): bigint {
    return this.now();
  }

  /** Subscription work: queries run, queries a commit did not touch, Transitions with news. */
  readonly counters = { runs: 0, skipped: 0, pushes: 0 };

  /** A mutation committed (over HTTP, a socket, a cron or the scheduler): refresh what it touched. */
  afterCommit(writes: WriteSet | "all"): void {
    for (const s of this.sessions) if (!s.frozen && s.invalidate(writes)) s.scheduleRefresh();
  }

  stats() {
    return { connections: this.sessions.size, ...this.counters };
  }

  resetStats(): void {
    this.counters.runs = 0;
    this.counters.skipped = 0;
    this.counters.pushes = 0;
  }

  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws));
  }

  private accept(ws: WebSocket): void {
    const session = new Session(this.nextId++, ws, this);
    this.sessions.add(session);
    this.log(`sync #${session.id} open (${this.sessions.size} connected)`);
    ws.on("message", (data, isBinary) => {
      if (isBinary) {
        session.enqueue(async () => {
          throw new ProtocolError("binary messages are not part of the protocol");
        });
        return;
      }
      session.onMessage(data.toString());
    });
    ws.on("pong", () => {
      session.alive = true;
    });
    ws.on("close", (code) => {
      this.sessions.delete(session);
      this.log(`sync #${session.id} closed ${code} after ${Date.now() - session.opened}ms`);
    });
    ws.on("error", () => ws.terminate());
  }

  /** Protocol Pings keep the clients' inactivity timers quiet; WebSocket pings find dead peers. */
  private ping(): void {
    for (const s of this.sessions) {
      if (s.frozen) continue;
      const ws = s.ws;
      if (!s.alive) {
        ws.terminate();
        continue;
      }
      s.alive = false;
      ws.ping();
      s.send({ type: "Ping" });
    }
  }

  /** Backend paused: "hang" freezes every connection, the other modes cut them. */
  pause(mode: "reset" | "hang" | "error"): void {
    for (const s of this.sessions) {
      if (mode === "hang") s.frozen = true;
      else s.ws.terminate();
    }
  }

  /** Backend resumed: frozen connections are cut, as held HTTP requests are. */
  resume(): void {
    for (const s of this.sessions) if (s.frozen) s.ws.terminate();
  }

  close(): void {
    clearInterval(this.pinger);
    for (const s of this.sessions) s.ws.terminate();
  }
}
