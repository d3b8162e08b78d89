// HTTP actions, served on the deployment's site URL (https://<deployment>.convex.site; the
// dev backend serves them under /http/ on its own port, devbackend/README.md).
//
//   GET /metrics   the queue's figures in the Prometheus text format (lib/exposition.ts),
//                  for any Prometheus to scrape with `Authorization: Bearer
//                  <METRICS_SCRAPE_TOKEN>`. One internal query per scrape
//                  (metrics:queueFiguresInternal, the same bounded reads as metrics:queue).
import { httpRouter } from "convex/server";
import { internal } from "./_generated/api";
import { httpAction } from "./_generated/server";
import { checkScrapeToken } from "./lib/auth";
import { CONTENT_TYPE, render } from "./lib/exposition";

const http = httpRouter();

function plain(status: number, text: string, extra: Record<string, string> = {}): Response {
  return new Response(`${text}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...extra },
  });
}

export const metrics = httpAction(async (ctx, request) => {
  const header = request.headers.get("authorization") ?? "";
  const bearer = /^Bearer (\S+)$/.exec(header);
  const check = checkScrapeToken(bearer === null ? undefined : bearer[1]);
  if (check === "not_configured") {
    return plain(
      503,
      "no scrape token is configured on this deployment: set METRICS_SCRAPE_TOKEN " +
        "(npx convex env set METRICS_SCRAPE_TOKEN <value>)",
    );
  }
  if (check !== "ok") {
    return plain(401, "unauthorized: send Authorization: Bearer <METRICS_SCRAPE_TOKEN>", {
      "www-authenticate": 'Bearer realm="fondation metrics"',
    });
  }
  const figures = await ctx.runQuery(internal.metrics.queueFiguresInternal, {});
  return new Response(render(figures), {
    status: 200,
    headers: { "content-type": CONTENT_TYPE, "cache-control": "no-store" },
  });
});

http.route({ path: "/metrics", method: "GET", handler: metrics });

export default http;
