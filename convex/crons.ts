import { cronJobs } from "convex/server";
import { internal } from "./_generated/api";

const crons = cronJobs();

// Expired leases back to the queue (or dead/canceled): a crashed worker's job is back
// within one lease plus one minute even when no worker claims in between.
crons.interval("reclaim expired leases", { minutes: 1 }, internal.jobs.reclaimExpired, {});

// Metrics buckets older than two days.
crons.interval("prune metrics buckets", { hours: 1 }, internal.metrics.pruneStats, {});

export default crons;
