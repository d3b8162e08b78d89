// GET /metrics (convex/http.ts): the queue's figures in the Prometheus text format, behind
// METRICS_SCRAPE_TOKEN only. The text is parsed here too; tests/integration/test_scrape_endpoint.py
// reads it through the dev backend with the official prometheus_client parser.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { render, samples } from "../../convex/lib/exposition";
import { DISPATCHER_MODES, DISPATCH_STARVE_AFTER_TICKS } from "../../convex/lib/policy";
import {
  OPERATOR, TOKEN, advance, claimOk, enqueue, makeT, newRequestId, setupEnv, teardownEnv, type T,
} from "./helpers";

const SCRAPE = "test-scrape-token-5555555555";

beforeEach(() => {
  setupEnv();
  vi.stubEnv("METRICS_SCRAPE_TOKEN", SCRAPE);
});
afterEach(teardownEnv);

async function scrape(t: T, token: string | null): Promise<Response> {
  return await t.fetch("/metrics", {
    method: "GET",
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  });
}

/** name{labels} -> value, from the exposition text (comments checked for shape). */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      expect(line).toMatch(/^# (HELP|TYPE) fondation_queue_[a-z0-9_]+ .+$/);
      continue;
    }
    const m = /^([a-z_][a-z0-9_]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    expect(m, line).not.toBeNull();
    out.set(m![1], Number(m![2]));
  }
  return out;
}

describe("the scrape token", () => {
  test("a scrape without the token, or with the worker's or the operator's, is refused", async () => {
    const t = makeT();
    for (const token of [null, "wrong", TOKEN, OPERATOR, `${SCRAPE}x`]) {
      const r = await scrape(t, token);
      expect(r.status, String(token)).toBe(401);
      expect(await r.text()).not.toContain("fondation_queue_");
    }
  });

  test("a scrape variable set to the worker token's value is still refused", async () => {
    vi.stubEnv("METRICS_SCRAPE_TOKEN", TOKEN);
    const r = await scrape(makeT(), TOKEN);
    expect(r.status).toBe(401);
  });

  test("without METRICS_SCRAPE_TOKEN every scrape is refused, and the reply says what to set", async () => {
    vi.stubEnv("METRICS_SCRAPE_TOKEN", "");
    const r = await scrape(makeT(), SCRAPE);
    expect(r.status).toBe(503);
    expect(await r.text()).toContain("METRICS_SCRAPE_TOKEN");
  });

  test("the _NEXT twin is accepted during a rotation", async () => {
    vi.stubEnv("METRICS_SCRAPE_TOKEN_NEXT", "next-scrape-token-66666666");
    expect((await scrape(makeT(), "next-scrape-token-66666666")).status).toBe(200);
    expect((await scrape(makeT(), SCRAPE)).status).toBe(200);
  });
});

describe("the exposition", () => {
  test("carries metrics:queue's figures, with seconds for durations and a label per status", async () => {
    const t = makeT();
    for (let i = 0; i < 5; i++) await enqueue(t);
    advance(90_000);
    await claimOk(t, "w1", 30_000); // its lease expires below
    const done = await claimOk(t, "w2", 3_600_000);
    await t.mutation(api.jobs.start, { token: TOKEN, jobId: done.jobId, leaseToken: done.leaseToken });
    advance(12_000);
    await t.mutation(api.jobs.complete, {
      token: TOKEN, jobId: done.jobId, leaseToken: done.leaseToken, runId: "r", summary: { docsCount: 0, durationMs: 1 },
    });
    advance(60_000);

    const r = await scrape(t, SCRAPE);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await r.text();
    const got = parse(text);
    const q = await t.query(api.metrics.queue, { token: OPERATOR });

    for (const [status, n] of Object.entries(q.counts)) {
      expect(got.get(`fondation_queue_jobs{status="${status}"}`), status).toBe(n);
    }
    expect(got.get("fondation_queue_ready")).toBe(q.ready);
    expect(got.get("fondation_queue_ready")).toBe(3);
    expect(got.get("fondation_queue_scheduled")).toBe(q.scheduled);
    expect(got.get("fondation_queue_in_progress")).toBe(1);
    // The figures are read at the scrape; the clock creeps by a millisecond per transaction.
    expect(got.get("fondation_queue_oldest_ready_age_seconds")).toBeCloseTo(q.oldestReadyAgeMs! / 1000, 1);
    expect(got.get("fondation_queue_oldest_expired_lease_age_seconds")).toBeCloseTo(q.oldestExpiredLeaseAgeMs! / 1000, 1);
    expect(got.get("fondation_queue_oldest_expired_lease_age_seconds")).toBeGreaterThan(30);
    expect(got.get('fondation_queue_window_completed{window="1h"}')).toBe(1);
    expect(got.get('fondation_queue_window_completed{window="1d"}')).toBe(1);
    expect(got.get('fondation_queue_window_success_rate{window="1h"}')).toBe(1);
    expect(got.get('fondation_queue_window_avg_duration_seconds{window="1h"}')).toBe(q.lastHour.avgDurationMs! / 1000);
    expect(got.get("fondation_queue_figures_timestamp_seconds")).toBeCloseTo(Date.now() / 1000, -1);
    // Every metric has its HELP and TYPE once.
    const names = new Set([...got.keys()].map((k) => k.replace(/\{.*$/, "")));
    for (const name of names) {
      expect(text.split(`# TYPE ${name} gauge\n`).length, name).toBe(2);
      expect(text.split(`# HELP ${name} `).length, name).toBe(2);
    }
  });

  test("an empty queue has no oldest-ready or expired-lease sample (no such job), and zero counts", async () => {
    const got = parse(await (await scrape(makeT(), SCRAPE)).text());
    expect(got.has("fondation_queue_oldest_ready_age_seconds")).toBe(false);
    expect(got.has("fondation_queue_oldest_expired_lease_age_seconds")).toBe(false);
    expect(got.has('fondation_queue_window_success_rate{window="1h"}')).toBe(false);
    expect(got.get('fondation_queue_jobs{status="pending"}')).toBe(0);
    expect(got.get("fondation_queue_ready")).toBe(0);
  });

  test("the dispatcher's figures: idle slots, and its mode as one sample per mode", async () => {
    const t = makeT();
    const modes = (got: Map<string, number>) =>
      Object.fromEntries(DISPATCHER_MODES.map((m) => [m, got.get(`fondation_queue_dispatcher_mode{mode="${m}"}`)]));
    await t.mutation(api.jobs.claimOne, {
      token: TOKEN, workerId: "w1", leaseMs: 60_000, requestId: newRequestId(), slots: [0, 1, 2],
    });
    let got = parse(await (await scrape(t, SCRAPE)).text());
    expect(got.get("fondation_queue_idle_slots")).toBe(3);
    expect(modes(got)).toEqual({ idle: 1, sleeping: 0, active: 0, starved: 0 });
    expect(got.get("fondation_queue_unfolded_events")).toBe(0);

    // No free slot for the due jobs: a few back-off ticks, then the dispatcher is starved.
    await t.mutation(api.jobs.withdraw, { token: TOKEN, workerId: "w1" });
    await enqueue(t);
    for (let i = 0; i <= DISPATCH_STARVE_AFTER_TICKS; i++) {
      const state = await t.run(async (ctx) => (await ctx.db.query("dispatcher").first())!);
      await t.mutation(internal.dispatch.tick, { epoch: state.epoch, idleTicks: i });
    }
    got = parse(await (await scrape(t, SCRAPE)).text());
    expect(got.get("fondation_queue_idle_slots")).toBe(0);
    expect(modes(got)).toEqual({ idle: 0, sleeping: 0, active: 0, starved: 1 });
    expect(got.get("fondation_queue_ready")).toBe(1);
  });

  test("a figure added to metrics:queue reaches the exposition without an edit", () => {
    // What the lead's "assigned" status and any new field will look like.
    const figures = {
      now: 1_000_000,
      counts: { pending: 1, assigned: 2 },
      dispatcherLagMs: 1500,
      nested: { someThing: 3, flag: true },
      lastHour: { completed: 4, successRate: null },
      note: "strings are skipped",
      dispatcher: "starved",
    };
    const text = render(figures);
    const got = parse(text);
    expect(got.get('fondation_queue_jobs{status="assigned"}')).toBe(2);
    expect(got.get("fondation_queue_dispatcher_lag_seconds")).toBe(1.5);
    expect(got.get("fondation_queue_nested_some_thing")).toBe(3);
    expect(got.get("fondation_queue_nested_flag")).toBe(1);
    expect(got.get('fondation_queue_window_completed{window="1h"}')).toBe(4);
    expect(got.get("fondation_queue_figures_timestamp_seconds")).toBe(1000);
    expect(text).not.toContain("strings are skipped");
    expect(got.get('fondation_queue_dispatcher_mode{mode="starved"}')).toBe(1);
    expect(got.get('fondation_queue_dispatcher_mode{mode="idle"}')).toBe(0);
    expect([...samples(figures).keys()]).not.toContain("window_success_rate");
  });
});
