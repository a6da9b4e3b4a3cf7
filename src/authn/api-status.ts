/**
 * What the cluster API servers did last, per cluster: `ok` / `failing` state for `/readyz`, metric and log
 * of each call, and the mapping of an API failure to the refusal a caller sees (fail closed:
 * `token_review_unavailable` 401, or `rate_limited` 429 with the API server's `Retry-After`, capped).
 * A refusal's message names no cluster; the cluster goes to `logDetail` (the access line).
 */
import type { Logger } from "pino";
import type { ClusterConfig } from "../config/schema.js";
import { RequestError } from "../errors.js";
import { KubeApiError, type KubeApiFailure } from "./kube-api.js";

/** Which API call a metric or log line is about. */
export type KubeApiCall = "tokenreview" | "serviceaccount";

/**
 * Outcome of one API call, for metrics: `authenticated` / `refused` (TokenReview answered), `ok`
 * (ServiceAccount read), or a {@link KubeApiFailure}.
 */
export type KubeApiOutcome = "authenticated" | "refused" | "ok" | KubeApiFailure;

/** Per-cluster state of the API server as last seen, for `/readyz`. */
export interface ReviewClusterStatus {
  verification: ClusterConfig["verification"];
  annotations: ClusterConfig["annotations"];
  /** `ok` after a successful call, `failing` after a failed one, `unknown` before any. */
  state: "ok" | "failing" | "unknown";
  /** RFC 3339 time of the last successful call. */
  lastSuccess?: string | undefined;
  /** The last failure: its category, HTTP status and time. */
  lastFailure?: { failure: KubeApiFailure; status?: number | undefined; at: string } | undefined;
}

/** Longest `Retry-After` passed on to clients, seconds. */
const MAX_RETRY_AFTER_SECONDS = 60;

/** Tracks the API server state of the clusters that talk to one, and turns failures into refusals. */
export class ApiServerStatus {
  readonly #status = new Map<string, ReviewClusterStatus>();
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #onApiCall: ((cluster: string, call: KubeApiCall, outcome: KubeApiOutcome) => void) | undefined;

  /**
   * @param logger where failures are logged (never the token)
   * @param now clock, epoch milliseconds
   * @param onApiCall one API call finished (metrics)
   */
  constructor(
    logger: Logger,
    now: () => number,
    onApiCall?: (cluster: string, call: KubeApiCall, outcome: KubeApiOutcome) => void,
  ) {
    this.#logger = logger;
    this.#now = now;
    this.#onApiCall = onApiCall;
  }

  /** Starts tracking `cluster` in state `unknown`. */
  track(cluster: ClusterConfig): void {
    this.#status.set(cluster.name, {
      verification: cluster.verification,
      annotations: cluster.annotations,
      state: "unknown",
    });
  }

  /** State of each tracked cluster's API server as last seen (copies). */
  snapshot(): Record<string, ReviewClusterStatus> {
    return Object.fromEntries([...this.#status].map(([k, v]) => [k, { ...v }]));
  }

  /** Counts one finished call of `cluster` with its `outcome` (metrics). */
  called(cluster: ClusterConfig, call: KubeApiCall, outcome: KubeApiOutcome): void {
    this.#onApiCall?.(cluster.name, call, outcome);
  }

  /** Records that the API server of `cluster` answered. */
  succeeded(cluster: ClusterConfig): void {
    const s = this.#status.get(cluster.name);
    if (s) {
      s.state = "ok";
      s.lastSuccess = new Date(this.#now()).toISOString();
    }
  }

  /**
   * Records, counts and logs a failed call, and returns the refusal for the caller.
   * @param err what the call threw (a {@link KubeApiError}, or anything else: counted as `unreachable`)
   * @returns `rate_limited` (429, `Retry-After` capped at 60 s) when the API server answered 429, else
   *   `token_review_unavailable` (401)
   */
  failed(cluster: ClusterConfig, call: KubeApiCall, err: unknown): RequestError {
    const e =
      err instanceof KubeApiError
        ? err
        : new KubeApiError("unreachable", err instanceof Error ? err.message : String(err));
    this.#onApiCall?.(cluster.name, call, e.failure);
    const s = this.#status.get(cluster.name);
    if (s) {
      s.state = "failing";
      s.lastFailure = { failure: e.failure, status: e.status, at: new Date(this.#now()).toISOString() };
    }
    this.#logger.warn(
      { cluster: cluster.name, call, failure: e.failure, status: e.status, detail: e.message },
      "kubernetes API call failed",
    );
    const logDetail = { cluster: cluster.name, call, failure: e.failure, status: e.status };
    if (e.failure === "rate_limited") {
      return new RequestError("rate_limited", "the API server is rate limiting this service; retry later", {
        logDetail,
        retryAfterSeconds: Math.min(MAX_RETRY_AFTER_SECONDS, e.retryAfterSeconds ?? 1),
      });
    }
    return new RequestError(
      "token_review_unavailable",
      `the API server cannot review the token right now (${e.failure})`,
      { logDetail, cause: err },
    );
  }
}
