/**
 * The one error for "this cluster's signing keys cannot be had right now": the key set could not be
 * fetched, read or parsed, or has gone stale. Every cause answers alike (`keys_unavailable`, HTTP 503,
 * one message); the cause goes to the log only.
 */
import { RequestError } from "../errors.js";

/**
 * Builds the `keys_unavailable` error.
 * @param logDetail what went wrong, for the operator's log only (never sent to the client)
 * @param options `retryAfterSeconds` (the `Retry-After` hint, seconds) and the `cause`
 */
export function keysUnavailable(
  logDetail: Record<string, unknown>,
  options: { retryAfterSeconds?: number; cause?: unknown } = {},
): RequestError {
  return new RequestError("keys_unavailable", "the cluster's signing keys are not available right now", {
    logDetail,
    ...options,
  });
}
