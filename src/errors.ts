/**
 * Typed request errors. Every error a client can cause is an {@link RequestError} with a stable
 * {@link ErrorCode}, an HTTP status and a message that is safe to show (it never contains a token or
 * internal detail). The serializer in `src/plugins/errors.ts` renders it in the wire format of the
 * endpoint that raised it: distribution-style `{"errors":[...]}` for the GET token realm, RFC 6749 §5.2
 * `{"error","error_description"}` for OAuth2 (`POST /token`).
 *
 * Tests branch on `code`, never on message text.
 */

/** Stable machine-readable reasons. Shown to clients as `detail.reason` (Docker) or mapped to RFC 6749. */
export type ErrorCode =
  // credentials
  | "missing_credentials"
  | "malformed_credentials"
  | "malformed_token"
  | "unsupported_algorithm"
  | "unknown_key"
  | "invalid_signature"
  | "invalid_issuer"
  | "invalid_audience"
  | "token_expired"
  | "token_not_yet_valid"
  | "missing_claim"
  | "invalid_subject"
  | "legacy_token"
  | "unknown_issuer"
  | "token_review_refused"
  | "token_review_unavailable"
  // request shape
  | "invalid_request"
  | "invalid_scope"
  | "unknown_service"
  | "unsupported_grant_type"
  | "unsupported_media_type"
  | "payload_too_large"
  | "invalid_target"
  // authorization
  | "access_denied"
  // operational
  | "rate_limited"
  | "overloaded"
  | "keys_unavailable"
  | "not_found"
  | "internal";

/** Default HTTP status per code. Authentication failures are 401 (distribution token.md). */
const STATUS: Record<ErrorCode, number> = {
  missing_credentials: 401,
  malformed_credentials: 401,
  malformed_token: 401,
  unsupported_algorithm: 401,
  unknown_key: 401,
  invalid_signature: 401,
  invalid_issuer: 401,
  invalid_audience: 401,
  token_expired: 401,
  token_not_yet_valid: 401,
  missing_claim: 401,
  invalid_subject: 401,
  legacy_token: 401,
  unknown_issuer: 401,
  // TokenReview (docs/tokenreview.md): the cluster refused the token, or could not be asked. Both fail closed
  // with 401, never a 5xx: the credential is not authenticated; an API server 429 is passed on as 429.
  token_review_refused: 401,
  token_review_unavailable: 401,
  invalid_request: 400,
  invalid_scope: 400,
  unknown_service: 400,
  unsupported_grant_type: 400,
  unsupported_media_type: 415,
  payload_too_large: 413,
  invalid_target: 400,
  access_denied: 403,
  rate_limited: 429,
  overloaded: 503,
  keys_unavailable: 503,
  not_found: 404,
  internal: 500,
};

/**
 * An error caused by a request (or by a dependency while serving one), safe to render to the client.
 * `message` must never contain secrets; put diagnostic detail for operators in `logDetail`, which only
 * reaches the log.
 */
export class RequestError extends Error {
  /** Stable reason, see {@link ErrorCode}. */
  readonly code: ErrorCode;
  /** HTTP status the serializer uses. */
  readonly statusCode: number;
  /** Extra detail for the log only (never sent to the client, never a secret). */
  readonly logDetail: Record<string, unknown> | undefined;
  /** Seconds after which a retry makes sense (sets `Retry-After`), for 429 and 503. */
  readonly retryAfterSeconds: number | undefined;

  /**
   * @param code stable reason
   * @param message client-safe, one sentence, no secrets
   * @param options optional status override, log-only detail, retry hint and cause
   */
  constructor(
    code: ErrorCode,
    message: string,
    options: {
      statusCode?: number;
      logDetail?: Record<string, unknown>;
      retryAfterSeconds?: number;
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RequestError";
    this.code = code;
    this.statusCode = options.statusCode ?? STATUS[code];
    this.logDetail = options.logDetail;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** True when `err` is an {@link RequestError} (also across module copies). */
export function isRequestError(err: unknown): err is RequestError {
  return err instanceof RequestError;
}

/**
 * Raised at boot for misconfiguration: the CLI prints `problems` one per line and exits non-zero.
 * Each problem starts with the dotted path of the offending key (`registries[0].signingKey.keyFile: ...`).
 */
export class ConfigError extends Error {
  /** One human-readable line per problem, each prefixed with its dotted path. */
  readonly problems: string[];

  /** @param problems one line per problem, `path: message` */
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/**
 * A short rendering of an attacker-supplied value that is safe for error bodies and logs: control
 * characters replaced by `?`, cut to `max` characters. Never pass a secret to it.
 */
export function safeEcho(value: unknown, max = 120): string {
  const s = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  const clean = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
