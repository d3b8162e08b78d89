// Pure policy and validation functions, tested exhaustively without a database.
import { describe, expect, test } from "vitest";
import {
  BACKOFF_BASE_MS,
  BACKOFF_CAP_MS,
  DURATION_BOUNDS_MS,
  ERROR_KINDS,
  HISTOGRAM_SIZE,
  backoffMs,
  constantTimeEqual,
  errorPolicy,
  histogramIndex,
  histogramQuantile,
} from "../../convex/lib/policy";
import {
  allowedRepoHosts,
  checkBranch,
  checkRepoUrl,
  utf8Length,
} from "../../convex/lib/validation";

describe("backoff", () => {
  test("every delay lies in [base/2, cap] and follows base*2^(n-1) x [0.5, 1.5)", () => {
    for (let n = 1; n <= 200; n++) {
      const nominal = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(n - 1, 30));
      for (const r of [0, 0.1, 0.25, 0.5, 0.75, 0.999999, 1]) {
        const d = backoffMs(n, r);
        expect(d).toBeGreaterThanOrEqual(BACKOFF_BASE_MS / 2);
        expect(d).toBeLessThanOrEqual(BACKOFF_CAP_MS);
        expect(d).toBeGreaterThanOrEqual(Math.floor(nominal * 0.5));
        expect(d).toBeLessThanOrEqual(Math.min(BACKOFF_CAP_MS, Math.ceil(nominal * 1.5)));
      }
    }
  });
  test("grows, then caps at ten minutes", () => {
    expect(backoffMs(1, 0.5)).toBe(10_000);
    expect(backoffMs(2, 0.5)).toBe(20_000);
    expect(backoffMs(3, 0.5)).toBe(40_000);
    expect(backoffMs(7, 0.5)).toBe(600_000);
    expect(backoffMs(1000, 0.5)).toBe(600_000);
    expect(backoffMs(1000, 0)).toBe(300_000);
  });
  test("nonsense inputs stay in bounds", () => {
    for (const [n, r] of [
      [0, 0.5],
      [-5, 0.5],
      [Number.NaN, 0.5],
      [3, Number.NaN],
      [3, -1],
      [3, 7],
      [Number.POSITIVE_INFINITY, 0.5],
    ]) {
      const d = backoffMs(n, r);
      expect(Number.isFinite(d)).toBe(true);
      expect(d).toBeGreaterThanOrEqual(BACKOFF_BASE_MS / 2);
      expect(d).toBeLessThanOrEqual(BACKOFF_CAP_MS);
    }
  });
});

test("error kinds map to the contract's policies", () => {
  const policies = Object.fromEntries(ERROR_KINDS.map((k) => [k, errorPolicy(k)]));
  expect(policies).toEqual({
    transient: "consume",
    timeout: "consume",
    permanent: "fatal",
    invalid_repository: "fatal",
    repository_not_found: "fatal",
    auth: "defer",
    usage_limit: "defer",
    disk: "defer",
    shutdown: "defer",
  });
});

test("constant-time compare is a correct equality", () => {
  expect(constantTimeEqual("abc", "abc")).toBe(true);
  expect(constantTimeEqual("", "")).toBe(true);
  expect(constantTimeEqual("abc", "abd")).toBe(false);
  expect(constantTimeEqual("abc", "abcd")).toBe(false);
  expect(constantTimeEqual("abcd", "abc")).toBe(false);
  expect(constantTimeEqual("", "a")).toBe(false);
  expect(constantTimeEqual("a\u0000", "a")).toBe(false);
  expect(constantTimeEqual("\u0100", "\u0000")).toBe(false);
});

describe("duration histogram", () => {
  test("index and bounds", () => {
    expect(histogramIndex(0)).toBe(0);
    expect(histogramIndex(1_000)).toBe(0);
    expect(histogramIndex(1_001)).toBe(1);
    expect(histogramIndex(10 ** 12)).toBe(HISTOGRAM_SIZE - 1);
  });
  test("quantile of an empty histogram is null", () => {
    expect(histogramQuantile(new Array(HISTOGRAM_SIZE).fill(0), 0.95, 0)).toBeNull();
  });
  test("p95 lands in the bucket holding the true p95", () => {
    const values = Array.from({ length: 1000 }, (_, i) => 500 + i * 1_700);
    const h = new Array(HISTOGRAM_SIZE).fill(0);
    for (const x of values) h[histogramIndex(x)] += 1;
    const exact = [...values].sort((a, b) => a - b)[Math.ceil(0.95 * values.length) - 1];
    const est = histogramQuantile(h, 0.95, Math.max(...values))!;
    const i = histogramIndex(exact);
    const lower = i === 0 ? 0 : DURATION_BOUNDS_MS[i - 1];
    const upper = DURATION_BOUNDS_MS[i] ?? Math.max(...values);
    expect(est).toBeGreaterThanOrEqual(lower);
    expect(est).toBeLessThanOrEqual(upper);
  });
  test("never above the largest value seen", () => {
    const h = new Array(HISTOGRAM_SIZE).fill(0);
    h[histogramIndex(61_000)] = 10;
    expect(histogramQuantile(h, 0.95, 61_000)).toBeLessThanOrEqual(61_000);
  });
});

describe("repository URLs", () => {
  const hosts = allowedRepoHosts(undefined);
  test("default allowed host is github.com", () => {
    expect(hosts).toEqual(["github.com"]);
    expect(allowedRepoHosts(" GitHub.com , git.example.org:8443 ,")).toEqual([
      "github.com",
      "git.example.org:8443",
    ]);
  });
  test.each([
    "https://github.com/acme/widgets",
    "https://github.com/acme/widgets.git",
    "https://GitHub.com/acme/my_repo-2",
    "https://github.com/acme/.github",
  ])("accepts %s", (url) => {
    expect(checkRepoUrl(url, hosts).ok).toBe(true);
  });
  test("normalizes the host's case", () => {
    expect(checkRepoUrl("https://GITHUB.com/Acme/W", hosts)).toEqual({
      ok: true,
      value: "https://github.com/Acme/W",
    });
  });
  test("ports must be listed exactly", () => {
    const h = allowedRepoHosts("git.example.org:8443");
    expect(checkRepoUrl("https://git.example.org:8443/a/b", h).ok).toBe(true);
    expect(checkRepoUrl("https://git.example.org/a/b", h).ok).toBe(false);
    expect(checkRepoUrl("https://git.example.org:8444/a/b", h).ok).toBe(false);
  });
  test.each([
    ["ext:: transport", "ext::sh -c touch% /tmp/pwned"],
    ["ext:: with https inside", "ext::https://github.com/acme/widgets"],
    ["file URL", "file:///etc/passwd"],
    ["file URL to a repo", "file://github.com/acme/widgets"],
    ["ssh URL", "ssh://git@github.com/acme/widgets"],
    ["scp-like", "git@github.com:acme/widgets.git"],
    ["http", "http://github.com/acme/widgets"],
    ["git protocol", "git://github.com/acme/widgets"],
    ["credentials", "https://user:pass@github.com/acme/widgets"],
    ["token user", "https://x-access-token@github.com/acme/widgets"],
    ["query", "https://github.com/acme/widgets?x=1"],
    ["fragment", "https://github.com/acme/widgets#main"],
    ["dot-dot", "https://github.com/acme/../etc"],
    ["dot-dot in name", "https://github.com/acme/a..b"],
    ["encoded", "https://github.com/acme/%2e%2e"],
    ["backslash", "https://github.com\\@evil.com/acme/w"],
    ["other host", "https://evil.com/acme/widgets"],
    ["host suffix trick", "https://github.com.evil.com/acme/widgets"],
    ["extra path", "https://github.com/acme/widgets/tree/main"],
    ["owner only", "https://github.com/acme"],
    ["trailing slash", "https://github.com/acme/widgets/"],
    ["leading dash owner", "https://github.com/-acme/widgets"],
    ["only .git", "https://github.com/acme/.git"],
    ["dot repo", "https://github.com/acme/."],
    ["space", "https://github.com/acme/wid gets"],
    ["newline", "https://github.com/acme/widgets\n"],
    ["NUL", "https://github.com/acme/wid\u0000gets"],
    ["tab", "https://github.com/acme/\twidgets"],
    ["non-ASCII", "https://github.com/acme/widgéts"],
    ["empty", ""],
    ["over-long", `https://github.com/acme/${"a".repeat(600)}`],
    ["port zero-padded", "https://github.com:0443/acme/widgets"],
  ])("rejects %s", (_name, url) => {
    expect(checkRepoUrl(url, hosts).ok).toBe(false);
  });
});

describe("branches", () => {
  test.each(["main", "feature/x", "release-1.2", "v1.0.0", "a/b/c", "user@host", "x+y", "_"])(
    "accepts %s",
    (b) => {
      expect(checkBranch(b).ok).toBe(true);
    },
  );
  test.each([
    ["option", "--upload-pack=x"],
    ["short option", "-b"],
    ["dash", "-"],
    ["dot-dot", "a..b"],
    ["tilde", "a~1"],
    ["caret", "a^"],
    ["colon", "a:b"],
    ["question", "a?"],
    ["star", "a*"],
    ["bracket", "a[b"],
    ["backslash", "a\\b"],
    ["space", "a b"],
    ["control", "a\u0001"],
    ["DEL", "a\u007f"],
    ["at-brace", "a@{1}"],
    ["at", "@"],
    ["leading slash", "/a"],
    ["trailing slash", "a/"],
    ["double slash", "a//b"],
    ["leading dot component", "a/.b"],
    ["leading dot", ".a"],
    ["lock", "a.lock"],
    ["lock component", "a.lock/b"],
    ["trailing dot", "a."],
    ["empty", ""],
    ["non-ASCII", "brañch"],
    ["over-long", "b".repeat(256)],
  ])("rejects %s", (_name, b) => {
    expect(checkBranch(b).ok).toBe(false);
  });
  test("255 characters is the limit", () => {
    expect(checkBranch("b".repeat(255)).ok).toBe(true);
  });
});

test("utf8Length counts bytes", () => {
  expect(utf8Length("abc")).toBe(3);
  expect(utf8Length("é")).toBe(2);
  expect(utf8Length("€")).toBe(3);
  expect(utf8Length("😀")).toBe(4);
  expect(utf8Length("😀")).toBe(new TextEncoder().encode("😀").length);
});
