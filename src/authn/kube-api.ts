/**
 * The two Kubernetes API calls this service makes, to one cluster's API server:
 * - `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview, kubernetes
 *   staging/src/k8s.io/api/authentication/v1/types.go);
 * - `GET /api/v1/namespaces/{namespace}/serviceaccounts/{name}` (a ServiceAccount object).
 *
 * Every call has one time budget (`timeoutMs`, connect + answer), a response size cap and no redirects; the
 * bearer token file is read again whenever its modification time or size changes (kubelet rotates the
 * projected token). Errors are {@link KubeApiError}s naming what went wrong, never the bearer token.
 */
import { readFileSync, statSync } from "node:fs";
import { Agent, request } from "undici";

/** Largest accepted API answer, bytes (a TokenReview echoes the ~1-2 KiB token; ServiceAccounts are small). */
const MAX_API_RESPONSE_BYTES = 256 * 1024;

/** Sent as `User-Agent` (the API server names the field manager and audit entries after it). */
const USER_AGENT = "registry-token-exchange";

/** Where and how to reach one API server. */
export interface KubeApiOptions {
  /** Base URL, `https://host:port` (a path prefix is kept). */
  url: string;
  /** PEM CA bundle trusted for TLS, read once. */
  caFile?: string | undefined;
  /** File whose content is sent as `Authorization: Bearer`; re-read when it changes. */
  bearerTokenFile?: string | undefined;
  /** Time budget per call, milliseconds. */
  timeoutMs: number;
}

/**
 * Why an API call failed: `unreachable` (connection refused, reset, TLS), `timeout` (past `timeoutMs`),
 * `unauthorized` (401: our bearer token is refused), `forbidden` (403: RBAC), `not_found` (404),
 * `rate_limited` (429, with `retryAfterSeconds`), `server_error` (5xx), `bad_answer` (not the expected
 * JSON object, or larger than {@link MAX_API_RESPONSE_BYTES}).
 */
export type KubeApiFailure =
  | "unreachable"
  | "timeout"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "rate_limited"
  | "server_error"
  | "bad_answer";

/** A failed API call; `message` is safe to log (HTTP status, the API's `Status.message`, the cause). */
export class KubeApiError extends Error {
  /** What went wrong. */
  readonly failure: KubeApiFailure;
  /** HTTP status, when the API server answered. */
  readonly status: number | undefined;
  /** `Retry-After` of a 429 (or 503) answer, seconds. */
  readonly retryAfterSeconds: number | undefined;

  /**
   * @param failure the category
   * @param message log-safe detail
   * @param status HTTP status, if any
   * @param retryAfterSeconds the API server's `Retry-After`, seconds
   */
  constructor(failure: KubeApiFailure, message: string, status?: number, retryAfterSeconds?: number) {
    super(message);
    this.name = "KubeApiError";
    this.failure = failure;
    this.status = status;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** `status` of a TokenReview answer (authentication.k8s.io/v1 TokenReviewStatus). */
export interface TokenReviewStatus {
  authenticated?: boolean;
  user?: {
    username?: string;
    uid?: string;
    groups?: string[];
    extra?: Record<string, string[]>;
  };
  audiences?: string[];
  error?: string;
}

/** The fields of a ServiceAccount this service reads. */
export interface ServiceAccountObject {
  namespace: string;
  name: string;
  uid: string;
  annotations: Record<string, string>;
}

/** A client for one API server. See the module doc. */
export class KubeApiClient {
  readonly #options: KubeApiOptions;
  readonly #agent: Agent;
  #token: { mtimeMs: number; size: number; value: string } | undefined;

  /**
   * @param options URL, CA, bearer token file and time budget
   * @throws {Error} when `caFile` cannot be read (checked at config load)
   */
  constructor(options: KubeApiOptions) {
    this.#options = options;
    const ca = options.caFile ? readFileSync(options.caFile, "utf8") : undefined;
    this.#agent = new Agent({
      connect: { timeout: options.timeoutMs, ...(ca ? { ca } : {}) },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connections: 8,
    });
  }

  /**
   * Creates a TokenReview for `token` with `audiences` and returns its `status`.
   * @throws {KubeApiError} on any failure (see {@link KubeApiFailure})
   */
  async reviewToken(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    const body = await this.#call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenReview",
      spec: { token, audiences },
    });
    if (body.kind !== "TokenReview" || typeof body.status !== "object" || body.status === null) {
      throw new KubeApiError("bad_answer", "TokenReview answer has no status");
    }
    return body.status as TokenReviewStatus;
  }

  /**
   * Reads ServiceAccount `namespace`/`name`.
   * @throws {KubeApiError} `not_found` when it does not exist, or any other failure
   */
  async getServiceAccount(namespace: string, name: string): Promise<ServiceAccountObject> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts/${encodeURIComponent(name)}`;
    const body = await this.#call("GET", path);
    const meta = body.metadata as Record<string, unknown> | undefined;
    if (body.kind !== "ServiceAccount" || !meta || typeof meta.uid !== "string") {
      throw new KubeApiError("bad_answer", "ServiceAccount answer has no metadata.uid");
    }
    const annotations: Record<string, string> = {};
    const raw = meta.annotations;
    if (raw !== undefined && raw !== null && typeof raw === "object") {
      for (const [k, v] of Object.entries(raw as Record<string, unknown>))
        if (typeof v === "string") annotations[k] = v;
    }
    return { namespace, name, uid: meta.uid, annotations };
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    await this.#agent.close();
  }

  #bearer(): string | undefined {
    const file = this.#options.bearerTokenFile;
    if (!file) return undefined;
    const st = statSync(file);
    if (!this.#token || this.#token.mtimeMs !== st.mtimeMs || this.#token.size !== st.size) {
      this.#token = { mtimeMs: st.mtimeMs, size: st.size, value: readFileSync(file, "utf8").trim() };
    }
    return this.#token.value || undefined;
  }

  async #call(method: "GET" | "POST", path: string, payload?: unknown): Promise<Record<string, unknown>> {
    const url = this.#options.url.replace(/\/+$/, "") + path;
    const headers: Record<string, string> = { accept: "application/json", "user-agent": USER_AGENT };
    if (payload !== undefined) headers["content-type"] = "application/json";
    const signal = AbortSignal.timeout(this.#options.timeoutMs);
    let res: Awaited<ReturnType<typeof request>>;
    try {
      const bearer = this.#bearer();
      if (bearer) headers.authorization = `Bearer ${bearer}`;
      res = await request(url, {
        method,
        headers,
        body: payload === undefined ? null : JSON.stringify(payload),
        dispatcher: this.#agent,
        signal,
      });
    } catch (err) {
      throw transportError(err, signal);
    }
    let text: string;
    try {
      text = await readCapped(res.body);
    } catch (err) {
      throw err instanceof KubeApiError ? err : transportError(err, signal);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const obj = body !== null && typeof body === "object" && !Array.isArray(body) ? body : undefined;
    if (res.statusCode >= 200 && res.statusCode < 300) {
      if (!obj) throw new KubeApiError("bad_answer", `HTTP ${res.statusCode} with a body that is not JSON`);
      return obj as Record<string, unknown>;
    }
    // metav1.Status (apimachinery pkg/apis/meta/v1/types.go): kind Status, status Failure, message, reason, code.
    const status = obj as { kind?: unknown; message?: unknown; reason?: unknown } | undefined;
    const detail =
      status?.kind === "Status"
        ? `${String(status.reason ?? "")}: ${String(status.message ?? "").slice(0, 300)}`
        : "no Status body";
    const message = `${method} ${path.split("/").slice(0, 5).join("/")}: HTTP ${res.statusCode} (${detail})`;
    switch (res.statusCode) {
      case 401:
        throw new KubeApiError("unauthorized", message, 401);
      case 403:
        throw new KubeApiError("forbidden", message, 403);
      case 404:
        throw new KubeApiError("not_found", message, 404);
      case 429:
        throw new KubeApiError("rate_limited", message, 429, retryAfter(res.headers["retry-after"]));
      default:
        throw new KubeApiError(
          res.statusCode >= 500 ? "server_error" : "bad_answer",
          message,
          res.statusCode,
          res.statusCode === 503 ? retryAfter(res.headers["retry-after"]) : undefined,
        );
    }
  }
}

/** `Retry-After` as whole seconds (delta-seconds form only; an HTTP date gives 1). */
function retryAfter(header: string | string[] | undefined): number {
  const v = Array.isArray(header) ? header[0] : header;
  return v !== undefined && /^\d{1,6}$/.test(v.trim()) ? Math.max(1, Number(v.trim())) : 1;
}

async function readCapped(body: AsyncIterable<unknown> & { destroy(): void }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > MAX_API_RESPONSE_BYTES) {
      body.destroy();
      throw new KubeApiError("bad_answer", `answer larger than ${MAX_API_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function transportError(err: unknown, signal: AbortSignal): KubeApiError {
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? e?.name ?? "error";
  if (
    signal.aborted ||
    code === "UND_ERR_HEADERS_TIMEOUT" ||
    code === "UND_ERR_BODY_TIMEOUT" ||
    code === "UND_ERR_CONNECT_TIMEOUT"
  ) {
    return new KubeApiError("timeout", `no answer within the time budget (${code})`);
  }
  if (code === "ENOENT" || code === "EACCES") {
    return new KubeApiError("unauthorized", `bearer token file cannot be read (${code})`);
  }
  return new KubeApiError("unreachable", `request failed: ${code} ${String(e?.message ?? "").slice(0, 200)}`);
}
