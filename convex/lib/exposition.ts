// The Prometheus text exposition format (version 0.0.4) of the queue's figures
// (metrics.ts queueFigures), rendered generically from the object itself: a figure added
// there (a new status in `counts`, a new field) appears here without an edit. Pure.
//
// How a figure becomes a sample (every metric is a gauge: the figures are a snapshot):
// - a number at path a.b.c -> `fondation_queue_a_b_c` (camelCase to snake_case);
// - a name ending in `Ms` is a duration: the value in seconds, the name ending `_seconds`;
// - `now` -> `fondation_queue_figures_timestamp_seconds` (when Convex read the figures);
// - an object listed in DIMENSIONS contributes its fields under one name with a label
//   (`counts.pending` -> `fondation_queue_jobs{status="pending"}`,
//   `lastHour.completed` -> `fondation_queue_window_completed{window="1h"}`);
// - a string listed in DIMENSIONS as a state (the dispatcher's mode) -> one sample per
//   possible value, 1 for the current one and 0 for the others
//   (`fondation_queue_dispatcher_mode{mode="starved"} 1`);
// - null (no such job: no oldest ready job) -> no sample, as Prometheus expects of a value
//   that does not exist; booleans -> 0/1; other strings and arrays are skipped.
import { DISPATCHER_MODES } from "./policy";

export const PREFIX = "fondation_queue_";
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Dimension =
  | { kind: "keys"; metric: string; label: string } // the object's keys are label values
  | { kind: "value"; metric: string; label: string; value: string } // one label value for all fields
  | { kind: "state"; metric: string; label: string; states: readonly string[] }; // a string: one of these

/** Figures that become labels rather than name parts. */
export const DIMENSIONS: Record<string, Dimension> = {
  counts: { kind: "keys", metric: "jobs", label: "status" },
  lastHour: { kind: "value", metric: "window", label: "window", value: "1h" },
  lastDay: { kind: "value", metric: "window", label: "window", value: "1d" },
  dispatcher: { kind: "state", metric: "dispatcher_mode", label: "mode", states: DISPATCHER_MODES },
};

/** HELP text of the names we know; any other figure gets a generic one. */
const HELP: Record<string, string> = {
  jobs: "Jobs per status (exact: the folded counters plus the queue events not folded yet)",
  ready: "Queued jobs whose runAt has come (pending or failed, due now)",
  scheduled: "Queued jobs waiting for a later runAt (retries, deferrals)",
  in_progress: "Jobs handed to a worker (assigned, claimed or running)",
  idle_slots: "Worker slots offered for dispatch and not assigned a job",
  dispatcher_mode:
    "The dispatcher's mode, 1 for the current one (starved: jobs due and no free slot; idle, sleeping, active)",
  unfolded_events: "Queue events not folded into the counters yet (the dispatcher folds them within seconds)",
  oldest_ready_age_seconds: "How long the oldest ready job has waited (absent: no ready job)",
  oldest_expired_lease_age_seconds:
    "How long ago the oldest unrenewed lease expired, not reclaimed yet (absent: none)",
  figures_timestamp_seconds: "When Convex read these figures (Unix time)",
  window_completed: "Jobs completed in the window (1h: last 12 five-minute buckets, 1d: 288)",
  window_failed: "Failed attempts that will retry, in the window (lease expiries included)",
  window_dead: "Jobs that ran out of attempts in the window",
  window_canceled: "Jobs canceled in the window",
  window_success_rate: "completed / (completed + dead) in the window (absent: none finished)",
  window_avg_duration_seconds: "Average start-to-completion time of the window's completed jobs",
  window_p95_duration_seconds: "95th percentile start-to-completion time (histogram estimate)",
  window_jobs_with_dropped_docs: "Completed jobs that left generated files out, in the window",
  window_dropped_docs: "Generated files left out of completed jobs' documents, in the window",
};

type Sample = { labels: [string, string][]; value: number };

function snake(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/[^A-Za-z0-9_]/g, "_")
    .toLowerCase();
}

/** The name part and the scale of one field (`oldestReadyAgeMs` -> oldest_ready_age_seconds, /1000). */
function field(key: string): { part: string; scale: number } {
  if (key === "now") return { part: "figures_timestamp_seconds", scale: 1000 };
  if (/[a-z0-9]Ms$/.test(key)) return { part: `${snake(key.slice(0, -2))}_seconds`, scale: 1000 };
  return { part: snake(key), scale: 1 };
}

function numeric(value: unknown): number | null {
  if (typeof value === "number") return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  return null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Every sample of `figures`, by metric name (without the prefix), in the object's order. */
export function samples(figures: Record<string, unknown>): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  const add = (name: string, labels: [string, string][], value: number) => {
    const list = out.get(name) ?? [];
    list.push({ labels, value });
    out.set(name, list);
  };
  const walk = (obj: Record<string, unknown>, parts: string[], labels: [string, string][]) => {
    for (const [key, value] of Object.entries(obj)) {
      const dim = parts.length === 0 && labels.length === 0 ? DIMENSIONS[key] : undefined;
      if (dim?.kind === "state" && typeof value === "string") {
        for (const state of dim.states) add(dim.metric, [[dim.label, state]], state === value ? 1 : 0);
        continue;
      }
      if (dim !== undefined && dim.kind !== "state" && isObject(value)) {
        if (dim.kind === "keys") {
          for (const [labelValue, v] of Object.entries(value)) {
            const n = numeric(v);
            if (n !== null) add(dim.metric, [[dim.label, labelValue]], n);
          }
        } else {
          walk(value, [dim.metric], [[dim.label, dim.value]]);
        }
        continue;
      }
      if (isObject(value)) {
        walk(value, [...parts, snake(key)], labels);
        continue;
      }
      const n = numeric(value);
      if (n === null) continue; // null (no such thing now), strings, arrays
      const { part, scale } = field(key);
      add([...parts, part].join("_"), labels, n / scale);
    }
  };
  walk(figures, [], []);
  return out;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** The exposition text: `# HELP`, `# TYPE gauge`, then the samples of each metric. */
export function render(figures: Record<string, unknown>): string {
  const lines: string[] = [];
  for (const [name, list] of samples(figures)) {
    const full = PREFIX + name;
    lines.push(`# HELP ${full} ${escapeHelp(HELP[name] ?? `metrics:queue figure ${name}`)}`);
    lines.push(`# TYPE ${full} gauge`);
    for (const s of list) {
      const labels =
        s.labels.length === 0 ? "" : `{${s.labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
      lines.push(`${full}${labels} ${formatValue(s.value)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
