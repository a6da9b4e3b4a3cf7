/**
 * The OAuth2 grants of `POST /token` (RFC 6749 §5.2 errors; distribution docs/spec/auth/oauth.md):
 * - `password` (containerd, and so every kubelet-driven pull): `username`, `password` (a service-account
 *   token or an exchange credential), `service`, `scope`, `client_id`, `access_type=offline`;
 * - `refresh_token` (docker's `identitytoken`, containers/image, buildkit): `refresh_token`, `service`,
 *   `scope`, `client_id`. The refresh token is never rotated: the answer carries the same one back
 *   (oauth.md: "this will only return the same refresh token and not a new one"; docker stores a
 *   refresh token only when it differs from the one it sent, moby#39718);
 * - RFC 8693 token exchange: `subject_token` (a JWT: service-account token or exchange credential),
 *   `subject_token_type=urn:ietf:params:oauth:token-type:jwt`, `audience` (= the registry `service`;
 *   `service` is accepted in its place), `scope`; answers `{access_token, issued_token_type, token_type, expires_in, scope}`. Errors per
 *   RFC 8693 §2.2.2: an invalid or unacceptable `subject_token` is `invalid_request`, an unknown
 *   audience `invalid_target`.
 * `scope` may repeat (containers/image) and/or be space-joined (containerd, docker).
 */

import type { AuditSink } from "../audit.js";
import { isRequestError, RequestError, safeEcho } from "../errors.js";
import { parseScopes } from "../policy/scope.js";
import type { IssueResult, TokenRealm } from "../realm/realm.js";
import { type Params, postResponse, repeatedParam, requireService, singleParam } from "./params.js";

/** RFC 6749 §4.3 resource owner password credentials grant. */
const GRANT_PASSWORD = "password";
/** RFC 6749 §6 refresh grant. */
const GRANT_REFRESH_TOKEN = "refresh_token";
/** RFC 8693 §2.1 token exchange grant. */
const GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
/** RFC 8693 §3 token type of a JWT (what a service-account token is). */
const TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt";
/** RFC 8693 §3 token type of an OAuth access token (what a registry token is). */
const TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";

/** Where the request came from and where its audit record goes. */
interface GrantContext {
  realm: TokenRealm;
  clientAddress: string;
  audit?: AuditSink | undefined;
}

function required(body: Params, name: string, what: string): string {
  const v = singleParam(body, name);
  if (v === undefined || v === "")
    throw new RequestError("invalid_request", `parameter "${name}" (${what}) is required`);
  return v;
}

function withRefreshToken(body: Record<string, unknown>, r: IssueResult): Record<string, unknown> {
  return r.refreshToken === undefined ? body : { ...body, refresh_token: r.refreshToken };
}

/**
 * Runs the grant `grantType` of a parsed `POST /token` form.
 * @returns the JSON body of the successful answer
 * @throws {RequestError} `unsupported_grant_type`, `invalid_request`, `invalid_scope`, `invalid_target`,
 *   credential errors (rendered `invalid_grant`, or `invalid_request` for token exchange), `keys_unavailable`
 */
export async function runGrant(
  grantType: string,
  body: Params,
  ctx: GrantContext,
): Promise<Record<string, unknown>> {
  switch (grantType) {
    case GRANT_PASSWORD:
      return passwordGrant(body, ctx);
    case GRANT_REFRESH_TOKEN:
      return refreshGrant(body, ctx);
    case GRANT_TOKEN_EXCHANGE:
      return tokenExchangeGrant(body, ctx);
    default:
      throw new RequestError(
        "unsupported_grant_type",
        `grant_type "${safeEcho(grantType, 60).replace(/[^\x20-\x7e]/g, "?")}" is not supported`,
      );
  }
}

function offline(body: Params): boolean {
  return singleParam(body, "access_type") === "offline";
}

async function passwordGrant(body: Params, ctx: GrantContext): Promise<Record<string, unknown>> {
  const service = requireService(body);
  const scopes = parseScopes(repeatedParam(body, "scope"));
  const password = singleParam(body, "password");
  if (password === undefined || password === "") {
    throw new RequestError(
      "missing_credentials",
      'parameter "password" (the service-account token) is required',
    );
  }
  const result = await ctx.realm.issue({
    credential: password,
    service,
    scopes,
    offline: offline(body),
    clientAddress: ctx.clientAddress,
    audit: ctx.audit,
  });
  return withRefreshToken(postResponse(result), result);
}

async function refreshGrant(body: Params, ctx: GrantContext): Promise<Record<string, unknown>> {
  const service = requireService(body);
  const scopes = parseScopes(repeatedParam(body, "scope"));
  const refreshToken = required(
    body,
    "refresh_token",
    "a refresh token from offline_token=true or access_type=offline",
  );
  const result = await ctx.realm.issue({
    credential: refreshToken,
    use: "refresh",
    service,
    scopes,
    // The same refresh token goes back (never rotated), as in distribution oauth.md's example.
    offline: true,
    clientAddress: ctx.clientAddress,
    audit: ctx.audit,
  });
  return withRefreshToken(postResponse(result), result);
}

async function tokenExchangeGrant(body: Params, ctx: GrantContext): Promise<Record<string, unknown>> {
  const subjectToken = required(body, "subject_token", "the service-account token");
  const subjectType = required(body, "subject_token_type", TOKEN_TYPE_JWT);
  if (subjectType !== TOKEN_TYPE_JWT) {
    throw new RequestError(
      "invalid_request",
      `subject_token_type "${safeEcho(subjectType, 80)}" is not supported (use ${TOKEN_TYPE_JWT})`,
    );
  }
  const requested = singleParam(body, "requested_token_type");
  if (requested !== undefined && requested !== "" && requested !== TOKEN_TYPE_ACCESS_TOKEN) {
    throw new RequestError(
      "invalid_request",
      `requested_token_type "${safeEcho(requested, 80)}" is not supported (this service issues ${TOKEN_TYPE_ACCESS_TOKEN})`,
    );
  }
  if (singleParam(body, "actor_token") !== undefined) {
    throw new RequestError("invalid_request", "actor_token (delegation) is not supported");
  }
  if (repeatedParam(body, "resource").length > 0) {
    throw new RequestError(
      "invalid_target",
      'resource is not supported: name the registry service in "audience"',
    );
  }
  const audiences = repeatedParam(body, "audience").filter((a) => a !== "");
  if (audiences.length > 1) {
    throw new RequestError("invalid_target", "exactly one audience (the registry service) is supported");
  }
  // `service` (the distribution parameter) is accepted in place of `audience`; both must then agree.
  const service = singleParam(body, "service");
  if (audiences[0] !== undefined && service !== undefined && service !== "" && service !== audiences[0]) {
    throw new RequestError(
      "invalid_request",
      'parameters "audience" and "service" name different registries',
    );
  }
  const audience = audiences[0] ?? (service === "" ? undefined : service);
  if (audience === undefined) {
    throw new RequestError("invalid_request", 'parameter "audience" (the registry service) is required');
  }
  try {
    ctx.realm.registry(audience);
  } catch (err) {
    if (isRequestError(err) && err.code === "unknown_service") {
      throw new RequestError(
        "invalid_target",
        err.message,
        err.logDetail ? { logDetail: err.logDetail } : {},
      );
    }
    throw err;
  }
  const scopes = parseScopes(repeatedParam(body, "scope"));
  let result: IssueResult;
  try {
    result = await ctx.realm.issue({
      credential: subjectToken,
      service: audience,
      scopes,
      clientAddress: ctx.clientAddress,
      audit: ctx.audit,
    });
  } catch (err) {
    // RFC 8693 §2.2.2: an invalid or unacceptable subject_token is invalid_request (400), not invalid_grant.
    if (isRequestError(err) && err.statusCode === 401) {
      throw new RequestError("invalid_request", `subject_token is not acceptable: ${err.message}`, {
        logDetail: { reason: err.code, ...err.logDetail },
      });
    }
    throw err;
  }
  return {
    access_token: result.token,
    issued_token_type: TOKEN_TYPE_ACCESS_TOKEN,
    token_type: "Bearer",
    expires_in: result.expiresIn,
    scope: result.grantedScope,
  };
}
