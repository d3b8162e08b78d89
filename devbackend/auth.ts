// User identity for the dev backend: verifies `Authorization: Bearer <JWT>` the way a
// Convex deployment does for the providers of convex/auth.config.ts (signature against the
// provider's JWKS, issuer, audience, expiry), so a web app's real tokens work here. Only
// RS256 and ES256, as Convex. Errors are Convex's: HTTP 401 InvalidAuthHeader.
import { createPublicKey, verify, type JsonWebKey, type KeyObject } from "node:crypto";
import type { AuthProvider } from "convex/server";
import type { JSONValue } from "convex/values";

export type Identity = { subject: string; issuer: string; tokenIdentifier: string; [claim: string]: JSONValue };

export class AuthError extends Error {}

const JWKS_TTL_MS = 60_000;
const FETCH_TIMEOUT_MS = 5_000;
const MAX_TOKEN_CHARS = 16_384;

type Jwk = JsonWebKey & { kid?: string; alg?: string };
const jwksCache = new Map<string, { at: number; keys: Jwk[] }>();

function b64json(part: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new AuthError(`Could not decode token: invalid ${what}`);
}

async function fetchJson(url: string): Promise<unknown> {
  const reply = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), redirect: "error" });
  if (!reply.ok) throw new AuthError(`Could not validate token: ${url} answered HTTP ${reply.status}`);
  return await reply.json();
}

async function keysOf(jwksUrl: string): Promise<Jwk[]> {
  const cached = jwksCache.get(jwksUrl);
  if (cached !== undefined && Date.now() - cached.at < JWKS_TTL_MS) return cached.keys;
  const body = (await fetchJson(jwksUrl)) as { keys?: unknown };
  if (!Array.isArray(body.keys)) throw new AuthError("Could not validate token: the JWKS has no keys");
  const keys = body.keys as Jwk[];
  jwksCache.set(jwksUrl, { at: Date.now(), keys });
  return keys;
}

/** OIDC providers publish their JWKS address in their discovery document. */
async function jwksUrlOf(provider: AuthProvider): Promise<string> {
  if ("type" in provider && provider.type === "customJwt") return provider.jwks;
  const domain = (provider as { domain: string }).domain.replace(/\/$/, "");
  const discovery = (await fetchJson(`${domain}/.well-known/openid-configuration`)) as { jwks_uri?: unknown };
  if (typeof discovery.jwks_uri !== "string") throw new AuthError("Could not validate token: no jwks_uri");
  return discovery.jwks_uri;
}

function issuerOf(provider: AuthProvider): string {
  return "type" in provider && provider.type === "customJwt" ? provider.issuer : (provider as { domain: string }).domain;
}

const sameIssuer = (a: string, b: string) => a.replace(/\/$/, "") === b.replace(/\/$/, "");

function checkSignature(alg: string, key: KeyObject, signed: string, signature: Buffer): boolean {
  const data = Buffer.from(signed);
  if (alg === "RS256") return verify("sha256", data, key, signature);
  // JWS ES256 signatures are r||s (IEEE P1363), not DER
  return verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, signature);
}

/** The identity a valid token carries; AuthError otherwise. */
export async function verifyJwt(token: string, providers: AuthProvider[], nowMs = Date.now()): Promise<Identity> {
  if (token.length > MAX_TOKEN_CHARS) throw new AuthError("Could not decode token: too long");
  const parts = token.split(".");
  if (parts.length !== 3) throw new AuthError("Could not decode token: not a JWT");
  const header = b64json(parts[0], "header");
  const claims = b64json(parts[1], "payload");
  const alg = header.alg;
  if (alg !== "RS256" && alg !== "ES256") throw new AuthError(`Could not decode token: unsupported algorithm ${String(alg)}`);
  const iss = claims.iss;
  const sub = claims.sub;
  if (typeof iss !== "string" || typeof sub !== "string" || sub.length === 0) {
    throw new AuthError("Could not decode token: iss and sub are required");
  }
  const provider = providers.find((p) => sameIssuer(issuerOf(p), iss));
  if (provider === undefined) throw new AuthError(`Could not validate token: no auth provider for issuer ${iss}`);
  if ("type" in provider && provider.type === "customJwt" && provider.algorithm !== alg) {
    throw new AuthError(`Could not validate token: algorithm ${alg}, expected ${provider.algorithm}`);
  }

  const keys = await keysOf(await jwksUrlOf(provider));
  const kid = header.kid;
  const candidates = keys.filter((k) => (kid === undefined || k.kid === kid) && (k.alg === undefined || k.alg === alg));
  const signature = Buffer.from(parts[2], "base64url");
  const signed = `${parts[0]}.${parts[1]}`;
  const valid = candidates.some((jwk) => {
    try {
      return checkSignature(alg, createPublicKey({ key: jwk, format: "jwk" }), signed, signature);
    } catch {
      return false;
    }
  });
  if (!valid) throw new AuthError("Could not validate token: signature does not match the provider's keys");

  const now = nowMs / 1000;
  if (typeof claims.exp !== "number") throw new AuthError("Could not validate token: no exp");
  if (claims.exp <= now) throw new AuthError(`Could not validate token: Token expired ${Math.round(now - claims.exp)} seconds ago`);
  if (typeof claims.nbf === "number" && claims.nbf > now) throw new AuthError("Could not validate token: not valid yet");
  const applicationID = (provider as { applicationID?: string }).applicationID;
  if (applicationID !== undefined) {
    const aud = claims.aud;
    const audiences = Array.isArray(aud) ? aud : [aud];
    if (!audiences.includes(applicationID)) throw new AuthError("Could not validate token: audience does not match");
  }
  // The identity fields convex-test passes to ctx.auth.getUserIdentity()
  const standard = ["name", "email", "email_verified", "picture", "nickname", "given_name", "family_name"];
  const extra = Object.fromEntries(standard.filter((k) => k in claims).map((k) => [k, claims[k] as JSONValue]));
  return { ...extra, subject: sub, issuer: iss, tokenIdentifier: `${iss}|${sub}` };
}
