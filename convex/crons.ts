import { cronJobs } from "convex/server";
import { internal } from "./_generated/api";

const crons = cronJobs();

// Expired leases back to the queue (or dead/canceled): a crashed worker's job is back
// within one lease plus 30 s even when no worker claims in between. Subscribed workers
// barely poll any more (jobs:wakeup leaves expired leases out), so this cron is what brings
// a lost host's job back; one bounded index read every 30 s is cheap.
crons.interval("reclaim expired leases", { seconds: 30 }, internal.jobs.reclaimExpired, {});

// Metrics buckets older than two days.
crons.interval("prune metrics buckets", { hours: 1 }, internal.metrics.pruneStats, {});

export default crons;
