// The monitoring files (monitoring/rules, the generated dashboard) read fondation_queue_*
// names: each must be one the Convex endpoint really serves. The endpoint is scraped here
// on a queue where every figure has a value (a ready job, an expired lease, completions).
// The worker's names are checked in tests/monitoring/test_dashboard.py.
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { api } from "../../convex/_generated/api";
import dashboard from "../../monitoring/dashboards/fondation-fleet.json";
import rules from "../../monitoring/rules/fondation.rules.yml?raw";
import { OPERATOR, TOKEN, advance, claimOk, enqueue, makeT, setupEnv, teardownEnv } from "./helpers";

beforeEach(() => {
  setupEnv();
  vi.stubEnv("METRICS_SCRAPE_TOKEN", "test-scrape-token-5555555555");
});
afterEach(teardownEnv);

const QUEUE_NAME = /\bfondation_queue_[a-z0-9_]+\b/g;

async function servedNames(): Promise<Set<string>> {
  const t = makeT();
  for (let i = 0; i < 3; i++) await enqueue(t);
  const done = await claimOk(t, "w1", 3_600_000);
  await t.mutation(api.jobs.start, { token: TOKEN, jobId: done.jobId, leaseToken: done.leaseToken });
  advance(5_000);
  await t.mutation(api.jobs.complete, {
    token: TOKEN, jobId: done.jobId, leaseToken: done.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
  });
  await claimOk(t, "w2", 1_000);
  advance(60_000);
  expect((await t.query(api.metrics.queue, { token: OPERATOR })).oldestExpiredLeaseAgeMs).not.toBeNull();
  const reply = await t.fetch("/metrics", { headers: { authorization: "Bearer test-scrape-token-5555555555" } });
  expect(reply.status).toBe(200);
  const names = new Set<string>();
  for (const line of (await reply.text()).split("\n")) {
    const m = /^(fondation_queue_[a-z0-9_]+)[{ ]/.exec(line);
    if (m !== null) names.add(m[1]);
  }
  return names;
}

function queries(): { title: string; expr: string }[] {
  type Panel = { type: string; title?: string; targets?: { expr: string }[] };
  return (dashboard as { panels: Panel[] }).panels
    .filter((p) => p.type !== "row")
    .flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title ?? "", expr: t.expr })));
}

test("every fondation_queue_* name in the dashboard and the rules is served by GET /metrics", async () => {
  const served = await servedNames();
  expect(served.size).toBeGreaterThan(10);
  const used = new Map<string, string>();
  for (const q of queries()) for (const name of q.expr.match(QUEUE_NAME) ?? []) used.set(name, `dashboard: ${q.title}`);
  for (const name of rules.match(QUEUE_NAME) ?? []) used.set(name, "rules");
  expect(used.size).toBeGreaterThan(5);
  for (const [name, where] of used) expect(served.has(name), `${name} (${where})`).toBe(true);
});
