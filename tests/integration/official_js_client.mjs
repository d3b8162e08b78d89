// Drives the dev backend with the official JS client (ConvexHttpClient from npm `convex`).
// Reads {url, calls: [{kind, path, args, auth?}]} as JSON on stdin (tokens never in argv),
// runs the calls in order and prints one JSON line per call:
// {ok: true, value} or {ok: false, error: <class name>, message, data?}.
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const plan = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const client = new ConvexHttpClient(plan.url, { logger: false });

for (const call of plan.calls) {
  if (call.auth === undefined || call.auth === null) client.clearAuth();
  else client.setAuth(call.auth);
  const ref = makeFunctionReference(call.path);
  try {
    let value;
    if (call.kind === "query") value = await client.query(ref, call.args);
    else if (call.kind === "mutation") value = await client.mutation(ref, call.args);
    else value = await client.action(ref, call.args);
    process.stdout.write(`${JSON.stringify({ ok: true, value: value ?? null })}\n`);
  } catch (e) {
    const out = { ok: false, error: e?.constructor?.name ?? "Error", message: String(e?.message ?? e) };
    if (e !== null && typeof e === "object" && "data" in e) out.data = e.data;
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
}
