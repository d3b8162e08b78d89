// The official JS ConvexClient (npm `convex`, WebSocket sync protocol) subscribed to
// jobs:listByUser on the dev backend, as a web app's useQuery would be. Reads {url,
// workerToken, operatorToken, repoUrl} on stdin
// (tokens never in argv) and prints one JSON line per step:
//   subscribe -> first result; enqueue over HTTP (ConvexHttpClient) -> pushed result;
//   cancel over the socket (client.mutation) -> pushed result; a wrong token -> onError.
// Every wait is bounded (WAIT_MS); a step that times out prints {"step", "timeout": true}.
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const WAIT_MS = 15_000;
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const plan = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const listByUser = makeFunctionReference("jobs:listByUser");
const client = new ConvexClient(plan.url, { logger: false });
const http = new ConvexHttpClient(plan.url, { logger: false });
const out = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const updates = [];
let waiter = null;
const unsubscribe = client.onUpdate(listByUser, { userId: "ada", token: plan.operatorToken }, (value) => {
  updates.push({ value, at: Date.now() });
  if (waiter !== null) waiter();
});

/** The next update after `seen` updates, or null after WAIT_MS. */
async function nextUpdate(seen) {
  const deadline = Date.now() + WAIT_MS;
  while (updates.length <= seen) {
    const left = deadline - Date.now();
    if (left <= 0) return null;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, left);
      waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    waiter = null;
  }
  return updates[seen];
}

try {
  const first = await nextUpdate(0);
  out({ step: "subscribed", ...(first === null ? { timeout: true } : { value: first.value }) });

  const sent = Date.now();
  const enq = await http.mutation(makeFunctionReference("jobs:enqueue"), {
    repoUrl: plan.repoUrl,
    userId: "ada",
    token: plan.operatorToken,
  });
  const pushed = await nextUpdate(1);
  out({
    step: "enqueued",
    jobId: enq.jobId,
    ...(pushed === null ? { timeout: true } : { value: pushed.value, afterMs: pushed.at - sent }),
  });

  const canceled = await client.mutation(makeFunctionReference("jobs:cancel"), {
    jobId: enq.jobId,
    token: plan.operatorToken,
  });
  const emptied = await nextUpdate(2);
  out({ step: "canceled", reply: canceled, ...(emptied === null ? { timeout: true } : { value: emptied.value }) });

  const refused = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ timeout: true }), WAIT_MS);
    client.onUpdate(
      listByUser,
      { userId: "ada", token: "wrong" },
      (value) => {
        clearTimeout(timer);
        resolve({ value });
      },
      (error) => {
        clearTimeout(timer);
        resolve({ error: error.constructor.name, data: error.data ?? null });
      },
    );
  });
  out({ step: "wrong token", ...refused });
} finally {
  unsubscribe();
  await client.close();
}
