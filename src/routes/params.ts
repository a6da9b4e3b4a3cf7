/**
 * What the realm endpoints share: reading query and form parameters (distribution docs/spec/auth/token.md
 * and oauth.md), the answer bodies of `GET` and `POST /token`, and the no-store headers of an answer
 * that carries a credential (RFC 6749 §5.1).
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import { RequestError } from "../errors.js";
import type { IssueResult } from "../realm/realm.js";

/** Parsed query or form parameters (a repeated parameter is an array). */
export type Params = Record<string, string | string[] | undefined>;

/** The last second {@link rfc3339} formatted, and its text (consecutive answers share their second). */
let lastSecond = Number.NaN;
let lastSecondText = "";

/** RFC 3339 without fractional seconds (moby#20970: docker parses `issued_at` as RFC 3339). */
function rfc3339(epochSeconds: number): string {
  if (epochSeconds !== lastSecond) {
    lastSecondText = new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
    lastSecond = epochSeconds;
  }
  return lastSecondText;
}

/**
 * Reads a parameter that must appear at most once.
 * @throws {RequestError} `invalid_request` when it is repeated
 */
export function singleParam(params: Params, name: string): string | undefined {
  const v = params[name];
  if (Array.isArray(v)) throw new RequestError("invalid_request", `parameter "${name}" must not be repeated`);
  return v;
}

/** Reads a parameter that may repeat, in order. */
export function repeatedParam(params: Params, name: string): string[] {
  const v = params[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/**
 * The `service` parameter.
 * @throws {RequestError} `invalid_request` when absent, empty or repeated
 */
export function requireService(params: Params): string {
  const service = singleParam(params, "service");
  if (service === undefined || service === "")
    throw new RequestError("invalid_request", 'parameter "service" is required');
  return service;
}

/** Marks an answer that carries a credential as never to be cached (RFC 6749 §5.1). */
export function noStore(reply: FastifyReply): FastifyReply {
  return reply.header("cache-control", "no-store").header("pragma", "no-cache");
}

/** The media type of a request body: `Content-Type` without its parameters, lower case ("" if absent). */
export function requestMediaType(request: FastifyRequest): string {
  return String(request.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
}

/** Media type of every JSON answer (what fastify sets for an object it serializes). */
export const JSON_TYPE = "application/json; charset=utf-8";

/**
 * Body of a successful GET (distribution token.md "Token Response Fields") as JSON text; `refresh_token`
 * only when `offline_token=true` was asked. Written by hand, with the token encoded once for its two
 * fields: the same text `JSON.stringify` gives for `{token, access_token, expires_in, issued_at,
 * refresh_token?}`, without the generic serializer.
 */
export function getResponseJson(r: IssueResult): string {
  const token = JSON.stringify(r.token);
  let body = `{"token":${token},"access_token":${token},"expires_in":${JSON.stringify(r.expiresIn)},"issued_at":"${rfc3339(r.issuedAt)}"`;
  if (r.refreshToken !== undefined) body += `,"refresh_token":${JSON.stringify(r.refreshToken)}`;
  return `${body}}`;
}

/** Body of a successful POST (distribution oauth.md "Token Response Fields"). */
export function postResponse(r: IssueResult): Record<string, unknown> {
  return {
    access_token: r.token,
    token_type: "Bearer",
    scope: r.grantedScope,
    expires_in: r.expiresIn,
    issued_at: rfc3339(r.issuedAt),
  };
}
