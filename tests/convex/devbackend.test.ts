// @vitest-environment node
// The dev backend's concurrency model (devbackend/occ.ts, backend.ts): calls run one at a
// time, but each one's reads and writes are recorded, so it can say what Convex, running
// mutations concurrently, would have met. Calls started together here all "arrive" before
// the first one runs: exactly the overlap Convex would have.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { Backend, type CallResult } from "../../devbackend/backend";
import { ReadSet, WriteSet, compareValues, inRange, intersects, rangeOf } from "../../devbackend/occ";

const WORKER = "occ-worker-token-0123456789";
const OPERATOR = "occ-operator-token-9876543210";
const REPO = "https://github.com/acme/widgets";

beforeEach(() => {
  vi.stubEnv("WORKER_TOKEN", WORKER);
  vi.stubEnv("OPERATOR_TOKEN", OPERATOR);
  vi.stubEnv("ALLOWED_REPO_HOSTS", "");
});
afterEach(() => {
  vi.unstubAllEnvs();
});

function ok(r: CallResult): unknown {
  if (!r.ok) throw new Error(r.message);
  return r.value;
}

const enqueue = (b: Backend, extra: Record<string, unknown> = {}) =>
  b.call("mutation", "jobs:enqueue", { repoUrl: REPO, token: OPERATOR, ...extra });
const claim = (b: Backend, workerId: string, requestId: string) =>
  b.call("mutation", "jobs:claimOne", { token: WORKER, workerId, leaseMs: 60_000, requestId, start: true });

async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function jobs(b: Backend) {
  return (await b.dump("jobs", 1000)) as { _id: string; status: string; lockedBy?: string }[];
}

describe("conflicts, as Convex's optimistic concurrency would have them", () => {
  test("two concurrent enqueues with one dedupe key: the second conflicts, one job exists", async () => {
    const b = new Backend();
    const [first, second] = await Promise.all([
      enqueue(b, { dedupeKey: "k", userId: "ada" }),
      enqueue(b, { dedupeKey: "k", userId: "ada" }),
    ]);
    expect((ok(first) as { created: boolean }).created).toBe(true);
    expect((ok(second) as { created: boolean }).created).toBe(false);
    expect(b.stats().functions["jobs:enqueue"]).toMatchObject({ calls: 2, conflicts: 1 });
    expect((await jobs(b)).length).toBe(1);
  });

  test("enqueues while the dispatcher runs neither conflict nor share a document", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] }); // its ticks wait: it stays active
    try {
      const b = new Backend();
      ok(await enqueue(b)); // wakes the dispatcher
      expect(((await b.dump("dispatcher", 1))[0] as { mode: string }).mode).toBe("active");
      b.resetStats();
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => enqueue(b, { userId: `u${i % 3}` })),
      );
      results.forEach(ok);
      const stats = b.stats();
      expect(stats.functions["jobs:enqueue"]).toMatchObject({ calls: 10, conflicts: 0 });
      expect(stats.hotDocuments).toEqual({});
    } finally {
      vi.useRealTimers();
    }
  });

  test("enqueues into an idle queue meet only at the dispatcher's row, which one of them writes", async () => {
    // Waking the dispatcher is the one write they could share: the first one's; the others
    // (re-run by Convex) find it awake. Conflicts bounded by the burst's concurrency, once.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      const b = new Backend();
      const results = await Promise.all(Array.from({ length: 10 }, () => enqueue(b)));
      results.forEach(ok);
      const stats = b.stats();
      expect(stats.functions["jobs:enqueue"]).toMatchObject({ calls: 10, conflicts: 9 });
      expect(stats.hotDocuments).toEqual({});
    } finally {
      vi.useRealTimers();
    }
  });

  test("workers accepting their own assignments at once never conflict", async () => {
    const b = new Backend();
    const workers = ["w1", "w2", "w3", "w4"];
    for (const w of workers) expect(ok(await claim(b, w, `offer-${w}`))).toBeNull();
    for (let i = 0; i < workers.length; i++) ok(await enqueue(b));
    await until(async () => (await jobs(b)).every((j) => j.status === "assigned"));
    b.resetStats();
    const accepted = await Promise.all(workers.map((w) => claim(b, w, `accept-${w}`)));
    const ids = accepted.map((r) => (ok(r) as { jobId: string }).jobId);
    expect(new Set(ids).size).toBe(workers.length);
    const stats = b.stats();
    expect(stats.functions["jobs:claimOne"]).toMatchObject({ calls: 4, conflicts: 0 });
    expect(stats.hotDocuments).toEqual({});
  });

  test("a claim polling while the dispatcher assigns its slot overlaps it: counted", async () => {
    // The model's positive case: the poll arrives before the tick commits, reads the slot
    // row the tick writes, and both write the job: Convex would have re-run the poll.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] }); // the tick runs when we say
    try {
      const b = new Backend();
      ok(await claim(b, "w1", "offer"));
      ok(await enqueue(b));
      const { epoch } = (await b.dump("dispatcher", 1))[0] as { epoch: number };
      const [tick, poll] = await Promise.all([
        b.call("mutation", "dispatch:tick", { epoch, idleTicks: 0 }),
        claim(b, "w1", "poll"),
      ]);
      expect((ok(tick) as { assigned: number }).assigned).toBe(1);
      expect(ok(poll)).not.toBeNull(); // run after the tick: it accepted the assignment
      const stats = b.stats();
      expect(stats.functions["jobs:claimOne"].conflicts).toBe(1);
      expect(stats.hotDocuments).toEqual({ jobs: 1 });
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("scheduled functions and subscriptions", () => {
  test("a scheduled tick runs as its own call once its mutation committed, and not at all after a failure", async () => {
    const b = new Backend();
    ok(await claim(b, "w1", "offer"));
    ok(await enqueue(b));
    await until(async () => (await jobs(b))[0].status === "assigned");
    expect(b.stats().functions["dispatch:tick"].calls).toBeGreaterThanOrEqual(1);
    const before = b.stats().scheduledRuns;
    const refused = await enqueue(b, { repoUrl: "ext::sh -c id" });
    expect(refused.ok).toBe(false);
    await new Promise((r) => setTimeout(r, 200));
    expect(b.stats().scheduledRuns).toBe(before);
  });

  test("a dispatch touches the assigned worker's subscription only", async () => {
    const b = new Backend();
    for (const w of ["w1", "w2"]) ok(await claim(b, w, `offer-${w}`));
    const reads = {
      w1: (await b.call("query", "jobs:assignments", { token: WORKER, workerId: "w1" })).reads!,
      w2: (await b.call("query", "jobs:assignments", { token: WORKER, workerId: "w2" })).reads!,
    };
    const commits: WriteSet[] = [];
    b.onCommit = (w) => {
      if (w !== "all") commits.push(w);
    };
    ok(await enqueue(b));
    await until(async () => (await jobs(b))[0].status === "assigned");
    const assignedTo = (await jobs(b))[0].lockedBy;
    const other = assignedTo === "w1" ? "w2" : "w1";
    const tick = commits[commits.length - 1];
    expect(intersects(reads[assignedTo as "w1" | "w2"], tick)).toBe(true);
    expect(intersects(reads[other], tick)).toBe(false);
    // the enqueue itself (a job and an event inserted) touched neither
    expect(intersects(reads.w1, commits[0])).toBe(false);
    expect(intersects(reads.w2, commits[0])).toBe(false);
  });
});

describe("read sets (occ.ts)", () => {
  test("a range is read only as far as the walk went", () => {
    const fields = ["status", "runAt", "_creationTime", "_id"];
    const range = rangeOf("jobs", fields, [
      { type: "Eq", fieldPath: "status", value: "pending" },
      { type: "Lte", fieldPath: "runAt", value: 100 },
    ]);
    expect(inRange(range, ["pending", 50, 1, "a"])).toBe(true);
    expect(inRange(range, ["pending", 101, 1, "a"])).toBe(false);
    expect(inRange(range, ["failed", 50, 1, "a"])).toBe(false);
    const walked = { ...range, stop: { key: ["pending", 40, 1, "b"], order: "asc" as const } };
    expect(inRange(walked, ["pending", 30, 1, "a"])).toBe(true);
    expect(inRange(walked, ["pending", 50, 1, "a"])).toBe(false); // past the last one read
  });

  test("Convex's value order: undefined < null < numbers < booleans < strings", () => {
    const ordered = [undefined, null, -1, 0, 2.5, false, true, "", "a", "b"];
    for (let i = 1; i < ordered.length; i++) expect(compareValues(ordered[i - 1], ordered[i])).toBeLessThan(0);
  });

  test("a write touches a read set through a document read or an index range", () => {
    const reads = new ReadSet();
    reads.docs.add("1jobs");
    reads.ranges.push(rangeOf("workerSlots", ["workerId", "slot", "_creationTime", "_id"], [
      { type: "Eq", fieldPath: "workerId", value: "w1" },
    ]));
    const doc = new WriteSet();
    doc.add("1jobs", "jobs", { status: "running" });
    expect(intersects(reads, doc)).toBe(true);
    const mine = new WriteSet();
    mine.add("9workerSlots", "workerSlots", { workerId: "w1", slot: 0, _creationTime: 1, _id: "9workerSlots" });
    expect(intersects(reads, mine)).toBe(true);
    const theirs = new WriteSet();
    theirs.add("8workerSlots", "workerSlots", { workerId: "w2", slot: 0, _creationTime: 1, _id: "8workerSlots" });
    expect(intersects(reads, theirs)).toBe(false);
  });
});
