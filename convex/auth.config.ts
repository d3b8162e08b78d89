// Who may sign users in: the identity provider whose JWTs this deployment accepts, read
// from Convex environment variables at deploy time (docs/OPERATIONS.md, "User sign-in").
//   AUTH_ISSUER          the provider's issuer URL: the JWT's `iss` (OIDC: its domain)
//   AUTH_APPLICATION_ID  the JWT's `aud` this deployment accepts
//   AUTH_JWKS_URL        set: a custom JWT provider with these keys; unset: OIDC discovery
//   AUTH_JWT_ALGORITHM   custom JWT only: RS256 (default) or ES256
// With no AUTH_ISSUER no provider is configured: only operators (the operator token) can call
// the client-facing functions.
import type { AuthConfig, AuthProvider } from "convex/server";

function providers(env: Record<string, string | undefined>): AuthProvider[] {
  const issuer = env.AUTH_ISSUER;
  const applicationID = env.AUTH_APPLICATION_ID;
  if (!issuer) return [];
  if (!applicationID) {
    // Without an audience any token the issuer signs for any app would be accepted.
    throw new Error("AUTH_APPLICATION_ID must be set with AUTH_ISSUER");
  }
  const jwks = env.AUTH_JWKS_URL;
  if (!jwks) return [{ domain: issuer, applicationID }];
  const algorithm = env.AUTH_JWT_ALGORITHM === "ES256" ? "ES256" : "RS256";
  return [{ type: "customJwt", issuer, jwks, applicationID, algorithm }];
}

export default { providers: providers(process.env) } satisfies AuthConfig;
