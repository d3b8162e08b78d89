// The in-memory Convex stand-in: our real convex/ functions run through convex-test.
// Development and test use only; nothing is persisted. Calls run one at a time; each one's
// reads and writes are recorded (occ.ts) so the backend can say what Convex, which runs
// mutations concurrently, would have seen: the conflicts a call would have met, the
// documents two concurrent mutations both wrote, and which subscriptions a commit touches.
// Scheduled functions (ctx.scheduler) run here as their own calls, at their time.
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { convexTest } from "convex-test";
import { makeFunctionReference, type UserIdentity } from "convex/server";
import { jsonToConvex, type JSONValue, type Value } from "convex/values";
import schema from "../convex/schema";
import { Recorder, intersects, sharedDocs, type ReadSet, type WriteSet } from "./occ";

export type Kind = "query" | "mutation" | "action";
type Registered = {
  isQuery?: boolean;
  isMutation?: boolean;
  isAction?: boolean;
  isPublic?: boolean;
  isInternal?: boolean;
};
type Module = Record<string, unknown>;

export const CONVEX_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../convex");
const KEY_PREFIX = "../convex/";

/**
 * Every module under convex/ (the `_generated` JavaScript included), keyed the way
 * convex-test expects: it strips the extension and finds the functions root from the key
 * that contains "_generated".
 */
export function moduleMap(dir = CONVEX_DIR): Record<string, () => Promise<Module>> {
  const map: Record<string, () => Promise<Module>> = {};
  const walk = (rel: string) => {
    for (const entry of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const relPath = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) {
        walk(relPath);
      } else if (/\.(ts|js)$/.test(entry.name) && !entry.name.endsWith(".d.ts")) {
        const url = pathToFileURL(path.join(dir, relPath)).href;
        map[KEY_PREFIX + relPath] = () => import(url) as Promise<Module>;
      }
    }
  };
  walk("");
  return map;
}

/** "jobs:claimOne", "jobs.js:claimOne", "lib/x:fn", "jobs" (default export). */
export function parseFunctionPath(raw: string): { module: string; name: string } | null {
  const m = /^([A-Za-z0-9_][A-Za-z0-9_/.-]*?)(?:\.js)?(?::([A-Za-z_$][A-Za-z0-9_$]*))?$/.exec(raw);
  if (m === null || m[1].includes("..") || m[1].startsWith("_generated")) return null;
  return { module: m[1], name: m[2] ?? "default" };
}

export type CallResult = (
  | { ok: true; value: unknown }
  | { ok: false; message: string; data?: unknown }
) & { reads?: ReadSet; writes?: WriteSet };

/** Per function: calls, failures, and conflicts (a mutation that met a concurrent commit). */
type FunctionStats = { calls: number; errors: number; conflicts: number };

/** A committed mutation, kept while a call that arrived before it may still run. */
type Commit = { seq: number; path: string; writes: WriteSet };

/** A function a call scheduled: run after the call commits, at its time. */
type Scheduled = { id: string; path: string; args: Record<string, unknown>; at: number };

const SCHEDULED_TABLE = "_scheduled_functions";

export class Backend {
  private t = convexTest(schema, moduleMap());
  private readonly modules = new Map<string, () => Promise<Module>>();
  private tail: Promise<unknown> = Promise.resolve();
  private readonly indexes = indexFieldsOf();

  // The call running now (calls run one at a time): its recorder and what it scheduled.
  private recorder: Recorder | null = null;
  private scheduling: Scheduled[] = [];
  private nextScheduledId = 1;
  private readonly timers = new Map<string, NodeJS.Timeout>();

  // Commits numbered in order; a call remembers how many had committed when it arrived.
  private commitSeq = 0;
  private commits: Commit[] = [];
  private readonly waiting = new Map<number, number>(); // arrival seq -> calls waiting
  private functions = new Map<string, FunctionStats>();
  private hot = new Map<string, number>(); // table -> documents written by two concurrent mutations
  private hotPairs = new Map<string, number>(); // "table: earlier <- later" -> count
  private conflictPairs = new Map<string, number>(); // "later <- earlier" -> count
  private scheduledRuns = 0;
  private waits: number[] = []; // ms each call waited for the calls before it (bounded sample)

  /** Told of every commit (HTTP, socket, cron or scheduled): the sync protocol's refresh. */
  onCommit: (writes: WriteSet | "all") => void = () => undefined;
  /** Told of each scheduled function's outcome (the server logs it). */
  onScheduled: (path: string, result: CallResult, ms: number) => void = () => undefined;

  constructor() {
    for (const [key, load] of Object.entries(moduleMap())) {
      this.modules.set(key.slice(KEY_PREFIX.length).replace(/\.(ts|js)$/, ""), load);
    }
    this.wrapSyscalls();
  }

  /** Forget everything (a fresh, empty deployment). */
  reset(): Promise<void> {
    return this.serialize(async () => {
      for (const timer of this.timers.values()) clearTimeout(timer);
      this.timers.clear();
      this.t = convexTest(schema, moduleMap());
      this.commits = [];
      this.onCommit("all");
    });
  }

  /** One call at a time, in arrival order (convex-test runs one transaction at a time). */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * The public function at `udfPath` and its kind, or null when there is none. Internal
   * functions are reported as missing, as Convex does for HTTP callers.
   */
  async resolvePublic(udfPath: string): Promise<{ kind: Kind; path: string } | null> {
    const parsed = parseFunctionPath(udfPath);
    if (parsed === null) return null;
    const load = this.modules.get(parsed.module);
    if (load === undefined) return null;
    const fn = (await load())[parsed.name] as Registered | undefined;
    if (fn === undefined || fn === null || fn.isPublic !== true || fn.isInternal === true) return null;
    const kind: Kind | null = fn.isQuery ? "query" : fn.isMutation ? "mutation" : fn.isAction ? "action" : null;
    if (kind === null) return null;
    return { kind, path: `${parsed.module}:${parsed.name}` };
  }

  /**
   * Run a resolved function. Function errors come back as values, not exceptions. The
   * result carries the call's read and write sets. A mutation that would have conflicted
   * (a commit after its arrival wrote into what it read) is counted: what runs here is what
   * Convex's re-run would do, since it runs after that commit.
   */
  call(
    kind: Kind,
    udfPath: string,
    args: Record<string, unknown>,
    identity?: Partial<UserIdentity>,
    opts: { subscription?: boolean } = {},
  ): Promise<CallResult> {
    const arrived = this.commitSeq;
    const arrivedAt = Date.now();
    this.waiting.set(arrived, (this.waiting.get(arrived) ?? 0) + 1);
    return this.serialize(async () => {
      if (this.waits.length < 100_000) this.waits.push(Date.now() - arrivedAt);
      const recorder = new Recorder(this.indexes);
      this.recorder = recorder;
      this.scheduling = [];
      let result: CallResult;
      try {
        result = await this.run(kind, udfPath, args, identity);
      } finally {
        this.recorder = null;
        recorder.finish();
        const n = (this.waiting.get(arrived) ?? 1) - 1;
        if (n === 0) this.waiting.delete(arrived);
        else this.waiting.set(arrived, n);
      }
      // A subscription's re-run is counted by the sync hub, apart from the calls clients make.
      const stats = opts.subscription === true ? null : this.statsOf(udfPath);
      if (stats !== null) {
        stats.calls++;
        if (!result.ok) stats.errors++;
      }
      if (kind === "mutation" && result.ok) {
        const concurrent = this.commits.filter((c) => c.seq > arrived);
        const met = concurrent.find((c) => intersects(recorder.reads, c.writes));
        if (stats !== null && met !== undefined) {
          stats.conflicts++;
          const pair = `${udfPath} <- ${met.path}`;
          this.conflictPairs.set(pair, (this.conflictPairs.get(pair) ?? 0) + 1);
        }
        for (const c of concurrent) {
          for (const id of sharedDocs(recorder.writes, recorder.reads, c.writes)) {
            const table = recorder.writes.docs.get(id)!.table;
            this.hot.set(table, (this.hot.get(table) ?? 0) + 1);
            const pair = `${table}: ${c.path} <- ${udfPath}`;
            this.hotPairs.set(pair, (this.hotPairs.get(pair) ?? 0) + 1);
          }
        }
        if (recorder.writes.size > 0) {
          this.commitSeq++;
          this.commits.push({ seq: this.commitSeq, path: udfPath, writes: recorder.writes });
          this.forgetOldCommits();
          this.onCommit(recorder.writes);
        }
        for (const s of this.scheduling) this.arm(s);
      }
      this.scheduling = [];
      return { ...result, reads: recorder.reads, writes: recorder.writes };
    });
  }

  private async run(kind: Kind, udfPath: string, args: Record<string, unknown>, identity?: Partial<UserIdentity>): Promise<CallResult> {
    const t = identity === undefined ? this.t : this.t.withIdentity(identity);
    try {
      let value: unknown;
      if (kind === "query") value = await t.query(makeFunctionReference<"query">(udfPath), args);
      else if (kind === "mutation") value = await t.mutation(makeFunctionReference<"mutation">(udfPath), args);
      else value = await t.action(makeFunctionReference<"action">(udfPath), args);
      return { ok: true, value };
    } catch (e) {
      return errorResult(e);
    }
  }

  /**
   * An HTTP action of convex/http.ts (`path` with its query string, as routed on the site
   * URL). Its queries and mutations run in this backend's one-at-a-time order.
   */
  fetch(pathQuery: string, init: RequestInit): Promise<Response> {
    return this.serialize(async () => await this.t.fetch(pathQuery, init));
  }

  /** Run an internal mutation (crons). */
  runInternalMutation(udfPath: string): Promise<CallResult> {
    return this.call("mutation", udfPath, {});
  }

  /** Every row of a table (admin dump), at most `limit`. */
  dump(table: string, limit: number): Promise<unknown[]> {
    return this.serialize(async () =>
      this.t.run(async (ctx) => {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        return await ctx.db.query(table as any).take(limit);
      }),
    );
  }

  /** What Convex would have met: conflicts per function, hot documents, scheduled runs. */
  stats() {
    const functions = Object.fromEntries([...this.functions.entries()].sort(([a], [b]) => a.localeCompare(b)));
    const total = (k: keyof FunctionStats) => [...this.functions.values()].reduce((a, f) => a + f[k], 0);
    const waits = [...this.waits].sort((a, b) => a - b);
    const pct = (q: number) => (waits.length === 0 ? null : waits[Math.min(waits.length - 1, Math.floor(q * waits.length))]);
    return {
      commits: this.commitSeq,
      calls: total("calls"),
      // How long calls waited for the ones before them: the one-at-a-time backend's load.
      queueWaitMs: { p50: pct(0.5), p95: pct(0.95), max: waits.length === 0 ? null : waits[waits.length - 1] },
      conflicts: total("conflicts"),
      functions,
      hotDocuments: Object.fromEntries(this.hot),
      hotDocumentsBy: Object.fromEntries(this.hotPairs),
      conflictsBy: Object.fromEntries(this.conflictPairs),
      scheduledRuns: this.scheduledRuns,
    };
  }

  resetStats(): void {
    this.functions = new Map();
    this.hot = new Map();
    this.hotPairs = new Map();
    this.conflictPairs = new Map();
    this.scheduledRuns = 0;
    this.waits = [];
  }

  private statsOf(path: string): FunctionStats {
    let s = this.functions.get(path);
    if (s === undefined) this.functions.set(path, (s = { calls: 0, errors: 0, conflicts: 0 }));
    return s;
  }

  /** Commits no waiting call arrived before are no use any more. */
  private forgetOldCommits(): void {
    const oldest = this.waiting.size === 0 ? this.commitSeq : Math.min(...this.waiting.keys());
    if (this.commits.length > 0 && this.commits[0].seq <= oldest) {
      this.commits = this.commits.filter((c) => c.seq > oldest);
    }
  }

  /** A committed call's scheduled function: its own call at its time, as on Convex. */
  private arm(s: Scheduled): void {
    const timer = setTimeout(() => {
      this.timers.delete(s.id);
      const started = Date.now();
      void this.call("mutation", s.path, s.args).then((result) => {
        this.scheduledRuns++;
        this.onScheduled(s.path, result, Date.now() - started);
      });
    }, Math.max(0, s.at - Date.now()));
    this.timers.set(s.id, timer);
  }

  /**
   * Every database syscall our functions make passes through here: reads and writes are
   * recorded for the running call, and scheduling is taken over (the function runs as its
   * own call once the scheduling one commits, instead of inside convex-test).
   */
  private wrapSyscalls(): void {
    const g = globalThis as unknown as { Convex: ConvexGlobal };
    const inner = g.Convex;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    g.Convex = {
      get syscall() {
        const next = inner.syscall;
        return (op: string, json: string) => {
          const reply = next(op, json);
          if (op === "1.0/queryStream" && self.recorder !== null) {
            self.recorder.queryStarted((JSON.parse(reply) as { queryId: number }).queryId, JSON.parse(json).query);
          }
          return reply;
        };
      },
      get asyncSyscall() {
        const next = inner.asyncSyscall;
        return (op: string, json: string) => self.asyncSyscall(op, json, next);
      },
      get jsSyscall() {
        return inner.jsSyscall;
      },
    };
  }

  private async asyncSyscall(op: string, json: string, next: AsyncSyscall): Promise<string> {
    const rec = this.recorder;
    const args = JSON.parse(json) as Record<string, JSONValue>;
    if (op === "1.0/schedule") {
      const id = `${this.nextScheduledId++}${SCHEDULED_TABLE}`;
      const at = Number(args.ts) * 1000;
      this.scheduling.push({ id, path: String(args.name), args: jsonToConvex(args.args) as Record<string, unknown>, at });
      return JSON.stringify(id);
    }
    if (op === "1.0/cancel_job") {
      const id = String(args.id);
      clearTimeout(this.timers.get(id));
      this.timers.delete(id);
      this.scheduling = this.scheduling.filter((s) => s.id !== id);
      return JSON.stringify({});
    }
    if (rec === null) return await next(op, json);
    const get = async (id: string): Promise<Record<string, Value> | null> =>
      jsonToConvex(JSON.parse(await next("1.0/get", JSON.stringify({ id })))) as Record<string, Value> | null;
    switch (op) {
      case "1.0/get": {
        rec.docRead(String(args.id), true);
        return await next(op, json);
      }
      case "1.0/queryStreamNext": {
        const reply = await next(op, json);
        const { value, done } = JSON.parse(reply) as { value: JSONValue; done: boolean };
        rec.queryNext(Number(args.queryId), value === null ? null : (jsonToConvex(value) as Record<string, Value>), done);
        return reply;
      }
      case "1.0/insert": {
        const reply = await next(op, json);
        const id = (JSON.parse(reply) as { _id: string })._id;
        rec.docWritten(id, tableOf(id), null, await get(id));
        return reply;
      }
      case "1.0/shallowMerge":
      case "1.0/replace":
      case "1.0/remove": {
        const id = String(args.id);
        rec.docRead(id, false); // a write reads the document first
        const before = await get(id);
        const reply = await next(op, json);
        rec.docWritten(id, tableOf(id), before, op === "1.0/remove" ? null : await get(id));
        return reply;
      }
      default:
        return await next(op, json);
    }
  }
}

type AsyncSyscall = (op: string, json: string) => Promise<string>;

/** convex-test's ids are a number followed by the table's name. */
function tableOf(id: string): string {
  return id.replace(/^[0-9]+/, "");
}
type ConvexGlobal = {
  syscall: (op: string, json: string) => string;
  asyncSyscall: AsyncSyscall;
  jsSyscall: unknown;
};

/** The fields of each index (the schema's, and Convex's by_creation_time and by_id). */
function indexFieldsOf(): (table: string, index: string) => string[] | null {
  const tables = (schema as unknown as { tables: Record<string, { export(): { indexes: { indexDescriptor: string; fields: string[] }[] } }> }).tables;
  return (table, index) => {
    if (index === "by_creation_time") return ["_creationTime", "_id"];
    if (index === "by_id") return ["_id"];
    const found = tables[table]?.export().indexes.find((i) => i.indexDescriptor === index);
    return found === undefined ? null : [...found.fields, "_creationTime", "_id"];
  };
}

function errorResult(e: unknown): CallResult {
  if (e !== null && typeof e === "object" && (e as { name?: string }).name === "ConvexError") {
    const err = e as { message: string; data: unknown };
    return { ok: false, message: `Uncaught ConvexError: ${err.message}`, data: err.data };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { ok: false, message: `Server Error\n${message}` };
}

export function tableNames(): string[] {
  return Object.keys((schema as unknown as { tables: Record<string, unknown> }).tables);
}
