// The in-memory Convex stand-in: our real convex/ functions run through convex-test.
// Development and test use only; nothing is persisted.
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { convexTest } from "convex-test";
import { makeFunctionReference, type UserIdentity } from "convex/server";
import schema from "../convex/schema";

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

export type CallResult =
  | { ok: true; value: unknown }
  | { ok: false; message: string; data?: unknown };

export class Backend {
  private t = convexTest(schema, moduleMap());
  private readonly modules = new Map<string, () => Promise<Module>>();
  private tail: Promise<unknown> = Promise.resolve();

  constructor() {
    for (const [key, load] of Object.entries(moduleMap())) {
      this.modules.set(key.slice(KEY_PREFIX.length).replace(/\.(ts|js)$/, ""), load);
    }
  }

  /** Forget everything (a fresh, empty deployment). */
  reset(): Promise<void> {
    return this.serialize(async () => {
      this.t = convexTest(schema, moduleMap());
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

  /** Run a resolved function. Function errors come back as values, not exceptions. */
  call(kind: Kind, udfPath: string, args: Record<string, unknown>, identity?: Partial<UserIdentity>): Promise<CallResult> {
    return this.serialize(async () => {
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
    });
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
