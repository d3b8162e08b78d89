import { cronJobs } from "convex/server";
import { internal } from "./_generated/api";

const crons = cronJobs();

// The queue's upkeep at least every 30 s, even when no job moves: a dispatcher tick
// (dispatch.ts) brings expired leases back to the queue (or dead/canceled), so a crashed
// worker's job is back within one lease plus 30 s; takes back assignments nobody accepted;
// folds queue events into the counters.
crons.interval("queue upkeep", { seconds: 30 }, internal.dispatch.maintain, {});

// Metrics buckets older than two days.
crons.interval("prune metrics buckets", { hours: 1 }, internal.metrics.pruneStats, {});

export default crons;
