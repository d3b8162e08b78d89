// Input validation for client-facing arguments. Pure functions: they return an error
// message or the normalized value; callers turn messages into INVALID_ARGUMENT errors.

export const MAX_URL_LENGTH = 512;
export const MAX_BRANCH_LENGTH = 255;
export const MAX_ID_LENGTH = 200;
export const MAX_TOKEN_LENGTH = 1_000;
export const MAX_ERROR_LENGTH = 4_000;
export const MAX_MESSAGE_LENGTH = 2_000;

export type Checked<T> = { ok: true; value: T } | { ok: false; error: string };

const ok = <T>(value: T): Checked<T> => ({ ok: true, value });
const bad = <T>(error: string): Checked<T> => ({ ok: false, error });

/** Printable ASCII only: no control characters, no spaces, nothing beyond 0x7e. */
export function isPrintableAsciiNoSpace(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

/** Printable text: no control characters (tab excepted for messages). */
export function hasControlChars(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

export function allowedRepoHosts(env: string | undefined): string[] {
  const raw = env === undefined || env.trim() === "" ? "github.com" : env;
  return raw
    .split(",")
    .map((h) => h.trim().toLowerCase())
    .filter((h) => h.length > 0);
}

// https://<host>[:port]/<owner>/<repo>[.git]
const REPO_URL = /^https:\/\/([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?\/([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)$/;
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const NAME_SEGMENT = /^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/;

/**
 * Accepts only `https://<host>[:port]/<owner>/<repo>[.git]` with host[:port] in the allowed
 * list. Rejects credentials, query, fragment, `..`, other schemes (ext::, file://, ssh),
 * whitespace and control characters, and over-long values. Returns the URL with the host
 * lower-cased.
 */
export function checkRepoUrl(url: string, allowedHosts: readonly string[]): Checked<string> {
  if (url.length === 0) return bad("repoUrl is empty");
  if (url.length > MAX_URL_LENGTH) return bad(`repoUrl is longer than ${MAX_URL_LENGTH}`);
  if (!isPrintableAsciiNoSpace(url)) return bad("repoUrl contains whitespace or control characters");
  if (!url.startsWith("https://")) return bad("repoUrl must be an https:// URL");
  if (url.includes("@")) return bad("repoUrl must not carry credentials");
  if (url.includes("?") || url.includes("#")) return bad("repoUrl must not have a query or fragment");
  if (url.includes("..")) return bad("repoUrl must not contain '..'");
  if (url.includes("%") || url.includes("\\")) return bad("repoUrl must not contain escapes");
  const m = REPO_URL.exec(url);
  if (m === null) return bad("repoUrl must look like https://<host>/<owner>/<repo>");
  const host = m[1].toLowerCase();
  const port = m[2];
  const owner = m[3];
  const repo = m[4];
  if (!host.split(".").every((label) => HOST_LABEL.test(label))) return bad("repoUrl host is invalid");
  if (port !== undefined) {
    const p = Number(port);
    if (!(p >= 1 && p <= 65535) || port.startsWith("0")) return bad("repoUrl port is invalid");
  }
  if (!NAME_SEGMENT.test(owner) || !NAME_SEGMENT.test(repo)) return bad("repoUrl owner or repository name is invalid");
  if (owner === "." || repo === "." || repo.toLowerCase() === ".git") {
    return bad("repoUrl owner or repository name is invalid");
  }
  const hostPort = port === undefined ? host : `${host}:${port}`;
  if (!allowedHosts.includes(hostPort)) return bad("repoUrl host is not allowed");
  return ok(`https://${hostPort}/${owner}/${repo}`);
}

/**
 * A branch name git would accept (git check-ref-format --branch rules), restricted to
 * printable ASCII, that cannot be read as a command-line option.
 */
export function checkBranch(branch: string): Checked<string> {
  if (branch.length === 0) return bad("branch is empty");
  if (branch.length > MAX_BRANCH_LENGTH) return bad(`branch is longer than ${MAX_BRANCH_LENGTH}`);
  if (!isPrintableAsciiNoSpace(branch)) return bad("branch contains whitespace, control or non-ASCII characters");
  if (branch.startsWith("-")) return bad("branch must not start with '-'");
  if (/[~^:?*[\\]/.test(branch)) return bad("branch contains a character git forbids (~ ^ : ? * [ \\)");
  if (branch.includes("..")) return bad("branch must not contain '..'");
  if (branch.includes("@{")) return bad("branch must not contain '@{'");
  if (branch === "@") return bad("branch must not be '@'");
  if (branch.startsWith("/") || branch.endsWith("/") || branch.includes("//")) {
    return bad("branch has an empty path component");
  }
  if (branch.endsWith(".")) return bad("branch must not end with '.'");
  for (const part of branch.split("/")) {
    if (part.startsWith(".")) return bad("a branch component must not start with '.'");
    if (part.endsWith(".lock")) return bad("a branch component must not end with '.lock'");
  }
  return ok(branch);
}

/** An identifier-like string: non-empty, bounded, printable ASCII without spaces. */
export function checkIdent(name: string, value: string, max = MAX_ID_LENGTH): Checked<string> {
  if (value.length === 0) return bad(`${name} is empty`);
  if (value.length > max) return bad(`${name} is longer than ${max}`);
  if (!isPrintableAsciiNoSpace(value)) return bad(`${name} contains whitespace or control characters`);
  return ok(value);
}

/** Free text: bounded, no control characters. */
export function checkText(name: string, value: string, max: number): Checked<string> {
  if (value.length > max) return bad(`${name} is longer than ${max}`);
  if (hasControlChars(value)) return bad(`${name} contains control characters`);
  return ok(value);
}

/** Truncate free text (error messages) instead of refusing it. */
export function clip(value: string, max: number): string {
  return value.length <= max ? value : `${value.slice(0, max - 1)}…`;
}

/** UTF-8 byte length without allocating. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
