// Local Convex stand-in: serves the subset of Convex's HTTP API the worker uses, running
// our real convex/ functions through convex-test. A development and test tool with no
// persistence: production always talks to a real Convex deployment. See README.md.
//
//   WORKER_TOKEN=... OPERATOR_TOKEN=... npx tsx devbackend/server.ts
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { convexToJson, jsonToConvex, type Value } from "convex/values";
import type { AuthConfig } from "convex/server";
import authConfig from "../convex/auth.config";
import crons from "../convex/crons";
import { AuthError, verifyJwt, type Identity } from "./auth";
import { Backend, tableNames, type Kind } from "./backend";
import { SYNC_PATH, SyncHub } from "./sync";

const HOST = process.env.DEV_BACKEND_HOST || "127.0.0.1";
const PORT = Number(process.env.DEV_BACKEND_PORT ?? "3210");
// Unset: the cron's own schedule (convex/crons.ts); tests and Molecule set their own.
const RECLAIM_INTERVAL_MS = process.env.RECLAIM_INTERVAL_MS ? Number(process.env.RECLAIM_INTERVAL_MS) : null;
const ADMIN = process.env.DEV_BACKEND_ADMIN === "1";
// A test harness's PID: the backend ends with it, even when the harness is killed before
// its teardown runs (a timeout's SIGKILL), instead of outliving it on its port.
const OWNER_PID = process.env.DEV_BACKEND_OWNER_PID ? Number(process.env.DEV_BACKEND_OWNER_PID) : null;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const RECLAIM_FUNCTION = "jobs:reclaimExpired";
// The queue's upkeep cron (a dispatcher tick: reclaims expired leases): RECLAIM_INTERVAL_MS sets its pace.
const UPKEEP_FUNCTION = "dispatch:maintain";

const backend = new Backend();

// ------------------------------------------------------------------ pause (chaos tests)
type PauseMode = "reset" | "hang" | "error";
let paused: PauseMode | null = null;
const held = new Set<Socket>();
// Lost replies (tests): the next N calls of a function run, then their connection is cut.
const loseReplies = new Map<string, number>();

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString()} ${line}\n`);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new RequestError(413, "RequestTooLarge", `body larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

class RequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The caller's identity: none without an Authorization header, else a JWT verified against
 * the providers of convex/auth.config.ts (a bad one is refused, as Convex does).
 * `Bearer dev:<subject>` acts as a user without a token (admin mode only).
 */
async function identityOf(req: IncomingMessage): Promise<Identity | undefined> {
  const auth = req.headers.authorization;
  if (auth === undefined) return undefined;
  return await identityOfHeader(auth);
}

async function identityOfHeader(auth: string): Promise<Identity> {
  const dev = /^Bearer dev:([A-Za-z0-9_.@|-]{1,200})$/.exec(auth);
  if (ADMIN && dev !== null) return { subject: dev[1], issuer: "dev", tokenIdentifier: `dev|${dev[1]}` };
  const bearer = /^Bearer (\S+)$/.exec(auth);
  if (bearer === null) throw new RequestError(401, "InvalidAuthHeader", "Authorization must be Bearer <JWT> here");
  try {
    return await verifyJwt(bearer[1], (authConfig as AuthConfig).providers);
  } catch (e) {
    if (e instanceof AuthError) throw new RequestError(401, "InvalidAuthHeader", e.message);
    throw new RequestError(401, "InvalidAuthHeader", `Could not validate token: ${e instanceof Error ? e.message : String(e)}`);
  }
}

// Real Convex's value formats (ValueFormat in the open-source backend): "json" and its
// legacy alias "convex_clean_json" answer in the clean export; "convex_encoded_json" and its
// alias "convex_json" in the encoded form the official clients decode. Arguments are read
// in the encoded form whatever the format, as Convex does.
type Format = "clean" | "encoded";
const FORMATS: Record<string, Format> = {
  json: "clean",
  convex_clean_json: "clean",
  convex_encoded_json: "encoded",
  convex_json: "encoded",
};

type Parsed = { path: string; args: Record<string, unknown>; format: Format };

/** Convex's clean export: int64 as a decimal string, bytes as base64, NaN/Infinity named. */
function exportClean(value: Value): unknown {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "NaN";
    if (!Number.isFinite(value)) return value > 0 ? "Infinity" : "-Infinity";
    return value;
  }
  if (value instanceof ArrayBuffer) return Buffer.from(value).toString("base64");
  if (Array.isArray(value)) return value.map(exportClean);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = exportClean(v);
  return out;
}

function exportValue(value: Value, format: Format): unknown {
  return format === "clean" ? exportClean(value) : convexToJson(value);
}

/**
 * JSON text with every number written as a float the way Convex's Rust serializer does
 * (`0.0`, `3.0`): the official Python client reads an integer-looking number as an int and
 * refuses it, since an encoded int64 is always `{"$integer": ...}`.
 */
function floatJson(value: unknown): string {
  if (typeof value === "number") {
    const text = JSON.stringify(value);
    return Number.isInteger(value) && !/[.e]/.test(text) ? `${text}.0` : text;
  }
  if (Array.isArray(value)) return `[${value.map(floatJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) parts.push(`${JSON.stringify(k)}:${floatJson(v)}`);
    }
    return `{${parts.join(",")}}`;
  }
  return JSON.stringify(value);
}

/** A function reply: encoded formats with Convex's float text, `json` as JSON.stringify. */
function sendReply(res: ServerResponse, format: Format, body: Record<string, unknown>): void {
  const text = format === "encoded" ? floatJson(body) : JSON.stringify(body);
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

// The WebSocket sync protocol (sync.ts): subscriptions re-run when a commit touches them.
const sync = new SyncHub(
  backend,
  (path) => backend.resolvePublic(path),
  async (token) => {
    try {
      return await identityOfHeader(`Bearer ${token}`);
    } catch (e) {
      throw new Error(e instanceof Error ? e.message : String(e));
    }
  },
  floatJson,
  log,
);
backend.onCommit = (writes) => sync.afterCommit(writes);
backend.onScheduled = (path, result, ms) => {
  // Scheduled ticks run many times a second in a burst: only failures are worth a line.
  if (!result.ok) log(`scheduled ${path} error ${result.message.split("\n").slice(-1)[0]} ${ms}ms`);
};

function parseRequest(raw: string, pathFromUrl?: string): Parsed {
  let body: unknown;
  try {
    body = raw.length === 0 ? {} : JSON.parse(raw);
  } catch {
    throw new RequestError(400, "BadJsonBody", "request body is not valid JSON");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new RequestError(400, "BadJsonBody", "request body must be a JSON object");
  }
  const b = body as { path?: unknown; args?: unknown; format?: unknown };
  const path = pathFromUrl ?? b.path;
  if (typeof path !== "string" || path.length === 0 || path.length > 300) {
    throw new RequestError(400, "BadRequest", "missing or invalid \"path\"");
  }
  const rawFormat = b.format ?? "json";
  const format = typeof rawFormat === "string" && Object.hasOwn(FORMATS, rawFormat) ? FORMATS[rawFormat] : undefined;
  if (format === undefined) {
    throw new RequestError(400, "BadFormat", `format param must be one of [\`json\`]. Got ${String(rawFormat)}`);
  }
  let args: unknown = b.args ?? {};
  if (Array.isArray(args)) {
    if (args.length !== 1) throw new RequestError(400, "BadRequest", "args must be one object");
    args = args[0];
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    throw new RequestError(400, "BadRequest", "args must be an object");
  }
  let decoded: Value;
  try {
    decoded = jsonToConvex(args as never);
  } catch (e) {
    throw new RequestError(400, "BadConvexValue", e instanceof Error ? e.message : "invalid argument encoding");
  }
  return { path, args: decoded as Record<string, unknown>, format };
}

async function handleFunction(
  req: IncomingMessage,
  res: ServerResponse,
  endpoint: Kind | "run",
  pathFromUrl?: string,
): Promise<string> {
  const { path, args, format } = parseRequest(await readBody(req), pathFromUrl);
  const identity = await identityOf(req);
  const target = await backend.resolvePublic(path);
  const notFound = {
    status: "error",
    errorMessage: `Could not find public function for '${path}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?`,
    logLines: [],
  };
  if (target === null) {
    send(res, 200, notFound);
    return `${path} error(not found)`;
  }
  if (endpoint !== "run" && target.kind !== endpoint) {
    send(res, 200, {
      status: "error",
      errorMessage: `Trying to execute ${target.path} as ${endpoint}, but it is defined as ${target.kind}.`,
      logLines: [],
    });
    return `${target.path} error(wrong kind)`;
  }
  const result = await backend.call(target.kind, target.path, args, identity);
  const lose = loseReplies.get(target.path) ?? 0;
  if (lose > 0) {
    loseReplies.set(target.path, lose - 1);
    req.socket.destroy(); // applied, and the reply never arrives
    return `${target.path} ${result.ok ? "success" : "error"} (reply lost)`;
  }
  if (result.ok) {
    sendReply(res, format, { status: "success", value: exportValue((result.value ?? null) as Value, format), logLines: [] });
    return `${target.path} success`;
  }
  const body: Record<string, unknown> = { status: "error", errorMessage: result.message, logLines: [] };
  let code = "";
  if (result.data !== undefined) {
    body.errorData = exportValue(result.data as Value, format);
    const c = (result.data as { code?: unknown } | null)?.code;
    if (typeof c === "string") code = `:${c}`;
  }
  sendReply(res, format, body);
  return `${target.path} error${code}`;
}

async function handleAdmin(req: IncomingMessage, res: ServerResponse, url: URL): Promise<string> {
  if (!ADMIN) throw new RequestError(404, "NotFound", "not found");
  if (req.method === "POST" && url.pathname === "/_dev/pause") {
    const raw = await readBody(req);
    let mode: PauseMode = "reset";
    if (raw.trim().length > 0) {
      const parsed = JSON.parse(raw) as { mode?: unknown };
      if (parsed.mode === "reset" || parsed.mode === "hang" || parsed.mode === "error") mode = parsed.mode;
      else if (parsed.mode !== undefined) throw new RequestError(400, "BadRequest", "mode: reset | hang | error");
    }
    paused = mode;
    sync.pause(mode);
    send(res, 200, { ok: true, paused: mode });
    return `pause(${mode})`;
  }
  if (req.method === "POST" && url.pathname === "/_dev/resume") {
    paused = null;
    sync.resume();
    for (const socket of held) socket.destroy();
    held.clear();
    send(res, 200, { ok: true, paused: null });
    return "resume";
  }
  if (req.method === "POST" && url.pathname === "/_dev/reset") {
    await backend.reset();
    send(res, 200, { ok: true });
    return "reset";
  }
  if (req.method === "POST" && url.pathname === "/_dev/reclaim") {
    const r = await backend.runInternalMutation(RECLAIM_FUNCTION);
    send(res, 200, r.ok ? { ok: true, value: r.value } : { ok: false, error: r.message });
    return "reclaim";
  }
  if (req.method === "POST" && url.pathname === "/_dev/lose-replies") {
    const parsed = JSON.parse((await readBody(req)) || "{}") as { path?: unknown; count?: unknown };
    if (typeof parsed.path !== "string" || !Number.isInteger(parsed.count) || (parsed.count as number) < 0) {
      throw new RequestError(400, "BadRequest", "{path: string, count: integer >= 0}");
    }
    loseReplies.set(parsed.path, parsed.count as number);
    send(res, 200, { ok: true });
    return `lose-replies ${parsed.path} ${String(parsed.count)}`;
  }
  if (req.method === "GET" && url.pathname === "/_dev/stats") {
    send(res, 200, { ...backend.stats(), subscriptions: sync.stats() });
    return "stats";
  }
  if (req.method === "POST" && url.pathname === "/_dev/stats/reset") {
    backend.resetStats();
    sync.resetStats();
    send(res, 200, { ok: true });
    return "stats reset";
  }
  if (req.method === "GET" && url.pathname === "/_dev/dump") {
    const table = url.searchParams.get("table") ?? "";
    if (!tableNames().includes(table)) throw new RequestError(400, "BadRequest", `unknown table "${table}"`);
    const limit = Math.min(Number(url.searchParams.get("limit") ?? "10000") || 10000, 100000);
    const rows = await backend.dump(table, limit);
    send(res, 200, { table, rows: rows.map((r) => convexToJson(r as Value)) });
    return `dump ${table}`;
  }
  throw new RequestError(404, "NotFound", "not found");
}

const RUN_PATH = /^\/api\/run\/([A-Za-z0-9_/.-]+)\/([A-Za-z_$][A-Za-z0-9_$]*)$/;

// HTTP actions (convex/http.ts). Convex serves them on the site URL
// (https://<deployment>.convex.site/<route>); the open-source backend also serves them under
// /http/ on its API port, and so does this one: /http/metrics runs the /metrics route.
const HTTP_ACTIONS = "/http/";

async function handleHttpAction(req: IncomingMessage, res: ServerResponse, url: URL): Promise<string> {
  const route = `/${url.pathname.slice(HTTP_ACTIONS.length)}${url.search}`;
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value === "string") headers.set(name, value);
    else if (Array.isArray(value)) headers.set(name, value.join(", "));
  }
  const method = req.method ?? "GET";
  const body = method === "GET" || method === "HEAD" ? undefined : await readBody(req);
  let reply: Response;
  try {
    reply = await backend.fetch(route, { method, headers, body });
  } catch (e) {
    // The action threw (a route that does not exist is a 404 reply, as on Convex).
    send(res, 500, { code: "InternalServerError", message: e instanceof Error ? e.message : String(e) });
    return `http ${route} 500`;
  }
  const data = Buffer.from(await reply.arrayBuffer());
  const out: Record<string, string> = { "content-length": String(data.length) };
  reply.headers.forEach((value, name) => {
    if (name !== "content-length") out[name] = value;
  });
  res.writeHead(reply.status, out);
  res.end(data);
  sync.afterCommit("all"); // an action may have run mutations
  return `http ${route} ${reply.status}`;
}

const server = createServer((req, res) => {
  const started = Date.now();
  const url = new URL(req.url ?? "/", "http://localhost");
  const isApi = url.pathname.startsWith("/api/") || url.pathname.startsWith(HTTP_ACTIONS);

  if (isApi && paused !== null) {
    if (paused === "reset") {
      req.socket.destroy();
      log(`${req.method} ${url.pathname} dropped (paused) 0ms`);
      return;
    }
    if (paused === "hang") {
      held.add(req.socket);
      req.socket.on("close", () => held.delete(req.socket));
      log(`${req.method} ${url.pathname} held (paused) 0ms`);
      return;
    }
    send(res, 503, { code: "Unavailable", message: "dev backend paused" });
    log(`${req.method} ${url.pathname} 503 (paused) 0ms`);
    return;
  }

  const work = async (): Promise<string> => {
    if (req.method === "GET" && url.pathname === "/health") {
      send(res, 200, paused === null ? { ok: true } : { ok: true, paused });
      return "health";
    }
    if (url.pathname.startsWith("/_dev/")) return await handleAdmin(req, res, url);
    if (url.pathname.startsWith(HTTP_ACTIONS)) return await handleHttpAction(req, res, url);
    if (req.method === "POST") {
      if (url.pathname === "/api/query") return await handleFunction(req, res, "query");
      if (url.pathname === "/api/mutation") return await handleFunction(req, res, "mutation");
      if (url.pathname === "/api/action") return await handleFunction(req, res, "action");
      const m = RUN_PATH.exec(url.pathname);
      if (m !== null) return await handleFunction(req, res, "run", `${m[1]}:${m[2]}`);
    }
    throw new RequestError(404, "NotFound", "not found");
  };

  work()
    .then((what) => {
      if (url.pathname !== "/health") log(`${req.method} ${url.pathname} ${what} ${Date.now() - started}ms`);
    })
    .catch((e: unknown) => {
      const err =
        e instanceof RequestError ? e : new RequestError(500, "InternalServerError", e instanceof Error ? e.message : String(e));
      if (!res.headersSent) send(res, err.status, { code: err.code, message: err.message });
      log(`${req.method} ${url.pathname} ${err.status} ${err.code} ${Date.now() - started}ms`);
    });
});

server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (!SYNC_PATH.test(url.pathname)) {
    socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    return;
  }
  if (paused === "reset") {
    socket.destroy();
    log(`GET ${url.pathname} dropped (paused)`);
    return;
  }
  if (paused === "hang") {
    held.add(socket);
    socket.on("close", () => held.delete(socket));
    log(`GET ${url.pathname} held (paused)`);
    return;
  }
  if (paused === "error") {
    socket.end("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
    log(`GET ${url.pathname} 503 (paused)`);
    return;
  }
  sync.upgrade(req, socket, head);
});

// ------------------------------------------------------------------ crons
const timers: NodeJS.Timeout[] = [];

function intervalMs(schedule: { type: string; seconds?: number; minutes?: number; hours?: number }): number | null {
  if (schedule.type !== "interval") return null;
  return ((schedule.seconds ?? 0) + (schedule.minutes ?? 0) * 60 + (schedule.hours ?? 0) * 3600) * 1000;
}

function startCrons(): void {
  const all = (crons as unknown as { crons: Record<string, { name: string; schedule: never }> }).crons;
  for (const [label, job] of Object.entries(all)) {
    let every = intervalMs(job.schedule);
    if (job.name === UPKEEP_FUNCTION && RECLAIM_INTERVAL_MS !== null && Number.isFinite(RECLAIM_INTERVAL_MS) && RECLAIM_INTERVAL_MS > 0) {
      every = RECLAIM_INTERVAL_MS;
    }
    if (every === null || every <= 0) {
      log(`cron "${label}" (${job.name}) skipped: only interval schedules run here`);
      continue;
    }
    const fire = () => {
      const started = Date.now();
      void backend.runInternalMutation(job.name).then((r) => {
        const value = r.ok ? JSON.stringify(r.value) : `error ${r.message}`;
        const busy = !r.ok || /[1-9]/.test(value);
        if (busy) log(`cron ${job.name} ${value} ${Date.now() - started}ms`);
      });
    };
    timers.push(setInterval(fire, every));
    log(`cron "${label}" runs ${job.name} every ${every}ms`);
  }
}

function shutdown(signal: string): void {
  log(`${signal}: shutting down`);
  for (const t of timers) clearInterval(t);
  sync.close();
  for (const socket of held) socket.destroy();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}

if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  process.stderr.write(`DEV_BACKEND_PORT must be a port number, got ${process.env.DEV_BACKEND_PORT}\n`);
  process.exit(2);
}
if (!process.env.WORKER_TOKEN) {
  log("warning: WORKER_TOKEN is not set; every worker call will be UNAUTHORIZED");
}
if (!process.env.OPERATOR_TOKEN && !process.env.OPERATOR_TOKEN_NEXT) {
  log("warning: OPERATOR_TOKEN is not set; every operator call will be UNAUTHORIZED");
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
if (OWNER_PID !== null) {
  if (!Number.isInteger(OWNER_PID) || OWNER_PID <= 1) {
    process.stderr.write(`DEV_BACKEND_OWNER_PID must be a process ID, got ${process.env.DEV_BACKEND_OWNER_PID}\n`);
    process.exit(2);
  }
  const owner = OWNER_PID;
  const watch = setInterval(() => {
    try {
      process.kill(owner, 0); // signal 0: only asks whether the process exists
    } catch {
      clearInterval(watch);
      shutdown(`owner ${owner} gone`);
    }
  }, 1000);
  watch.unref();
}

server.listen(PORT, HOST, () => {
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : PORT;
  log(`dev backend (convex-test, in memory, no persistence) listening on http://${HOST}:${port}${ADMIN ? " [admin endpoints on]" : ""}`);
  startCrons();
});
