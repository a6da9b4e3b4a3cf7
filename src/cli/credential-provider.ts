/**
 * The kubelet image credential provider exec plugin (`registry-token-exchange credential-provider`).
 *
 * Contract (kubelet pkg/credentialprovider/plugin/plugin.go, KEP-2133/KEP-4412): kubelet writes a
 * `CredentialProviderRequest` to stdin, reads a `CredentialProviderResponse` from stdout, treats any
 * non-zero exit as a failure (logging stderr), and kills the plugin after one minute. So the plugin:
 * - forwards the request verbatim to `POST <url>/v1/credential-provider` and prints the answer;
 * - retries transient failures (connection refused or reset, timeouts, 429, 5xx) after 1, 2, 4, 5, 5...
 *   seconds (a longer `Retry-After` wins, up to 10 s) within a total deadline (default 50 s, below
 *   kubelet's 60 s) and a per-attempt timeout: the same schedule as the sh plugin;
 * - fails at once on anything else (4xx, TLS errors, an unknown host) with one line on stderr; a
 *   certificate that is not trusted names the option that fixes it (`--ca-file`), in the same words as
 *   the sh plugin (`authn/tls-advice.ts`);
 * - exits 0 on success, 1 on any failure, 2 on a usage error (the CLI in `cli/index.ts`), like the sh plugin;
 * - never prints or logs the service-account token or the credential except the answer on stdout.
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request } from "undici";
import { classifyTlsFailure, tlsAdvice } from "../authn/tls-advice.js";

/** Options of the credential provider (exec plugin): the CLI flags. */
export interface CredentialProviderOptions {
  /** Base URL of the service, e.g. `https://rte.example.com` (a path prefix is kept). */
  url: string;
  /** PEM CA bundle to trust for the service's TLS certificate. */
  caFile?: string | undefined;
  /** Total time budget including retries, seconds. */
  timeoutSeconds: number;
  /** Time budget of one attempt, seconds. */
  attemptTimeoutSeconds: number;
}

/** Largest request accepted on stdin and largest answer accepted from the service, bytes. */
const MAX_CREDENTIAL_PROVIDER_BYTES = 1024 * 1024;

/** A failure of the credential provider (exec plugin); `message` is the one line printed on stderr (never contains a secret). */
export class CredentialProviderError extends Error {
  override name = "CredentialProviderError";
}

/** Clock and sleep, replaceable in tests. */
export interface CredentialProviderDeps {
  /** Clock, epoch milliseconds. */
  now?: () => number;
  /** Waits `ms` milliseconds. */
  sleep?: (ms: number) => Promise<void>;
}

/** Network error codes worth another attempt. */
const TRANSIENT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
]);

/** The endpoint URL for a base URL (`https://h/prefix` -> `https://h/prefix/v1/credential-provider`). */
function endpointUrl(base: string): URL {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new CredentialProviderError(`--url ${JSON.stringify(base.slice(0, 200))} is not an absolute URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw new CredentialProviderError("--url must be http(s)");
  if (url.search || url.hash || url.username || url.password) {
    throw new CredentialProviderError("--url must not carry a query, fragment or credentials");
  }
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/v1/credential-provider`;
  return url;
}

/** Validates the request kubelet wrote (only enough to fail early with a clear message). */
function checkRequest(input: string): { apiVersion: string } {
  let req: unknown;
  try {
    req = JSON.parse(input);
  } catch {
    throw new CredentialProviderError("stdin is not a JSON CredentialProviderRequest");
  }
  const r = req as { kind?: unknown; apiVersion?: unknown } | null;
  if (
    !r ||
    typeof r !== "object" ||
    r.kind !== "CredentialProviderRequest" ||
    typeof r.apiVersion !== "string"
  ) {
    throw new CredentialProviderError("stdin is not a CredentialProviderRequest (kind/apiVersion missing)");
  }
  return { apiVersion: r.apiVersion };
}

interface Attempt {
  /** The answer to print, when done. */
  output?: string;
  /** Why this attempt failed, when it did. */
  reason?: string;
  /** Whether another attempt may succeed. */
  transient?: boolean;
  /** Seconds the service asked to wait. */
  retryAfterSeconds?: number;
}

function serverReason(status: number, text: string): string {
  try {
    const body = JSON.parse(text) as {
      errors?: Array<{ code?: unknown; message?: unknown; detail?: { reason?: unknown } }>;
      error?: unknown;
      error_description?: unknown;
    };
    const e = body.errors?.[0];
    if (e && typeof e.message === "string") {
      const reason = typeof e.detail?.reason === "string" ? ` (${e.detail.reason})` : "";
      return `HTTP ${status} ${String(e.code ?? "")}: ${e.message}${reason}`;
    }
    if (typeof body.error === "string") {
      return `HTTP ${status} ${body.error}: ${String(body.error_description ?? "")}`;
    }
  } catch {
    // not JSON: fall through
  }
  return `HTTP ${status}`;
}

function oneLine(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: one line on stderr, no control characters
  return s.replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 500);
}

function describeError(err: unknown): { reason: string; transient: boolean } {
  const e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: { code?: unknown } };
  const code = typeof e.code === "string" ? e.code : typeof e.cause?.code === "string" ? e.cause.code : "";
  if (e.name === "TimeoutError" || e.name === "AbortError")
    return { reason: "attempt timed out", transient: true };
  const message = typeof e.message === "string" ? e.message : String(err);
  const tls = classifyTlsFailure(`${code} ${message}`);
  if (tls) return { reason: tlsAdvice(tls, "the service's certificate", "--ca-file"), transient: false };
  return { reason: `${code ? `${code} ` : ""}${message}`, transient: TRANSIENT_CODES.has(code) };
}

async function attempt(
  url: URL,
  input: string,
  apiVersion: string,
  agent: Agent,
  timeoutMs: number,
): Promise<Attempt> {
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json",
        "user-agent": "registry-token-exchange-credential-provider",
      },
      body: input,
      dispatcher: agent,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    return describeError(err);
  }
  let text: string;
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > MAX_CREDENTIAL_PROVIDER_BYTES) {
        res.body.destroy();
        return { reason: `answer larger than ${MAX_CREDENTIAL_PROVIDER_BYTES} bytes`, transient: false };
      }
      chunks.push(chunk as Buffer);
    }
    text = Buffer.concat(chunks).toString("utf8");
  } catch (err) {
    return describeError(err);
  }
  const status = res.statusCode;
  if (status === 200) {
    let body: { kind?: unknown; apiVersion?: unknown } | null;
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      return { reason: "the service answered 200 with a body that is not JSON", transient: false };
    }
    if (body?.kind !== "CredentialProviderResponse" || body.apiVersion !== apiVersion) {
      return {
        reason: `the service answered something other than a ${apiVersion} CredentialProviderResponse`,
        transient: false,
      };
    }
    return { output: `${JSON.stringify(body)}\n` };
  }
  const retryAfter = Number(res.headers["retry-after"]);
  return {
    reason: serverReason(status, text),
    transient: status === 429 || status >= 500,
    ...(Number.isFinite(retryAfter) && retryAfter >= 0 ? { retryAfterSeconds: retryAfter } : {}),
  };
}

/**
 * Sends `input` (the `CredentialProviderRequest` from stdin) to the service and returns what to print on
 * stdout, retrying transient failures within `options.timeoutSeconds`.
 * @throws {CredentialProviderError} one-line reason (invalid input or options, a permanent error, or the deadline)
 */
export async function runCredentialProvider(
  input: string,
  options: CredentialProviderOptions,
  deps: CredentialProviderDeps = {},
): Promise<string> {
  const now = deps.now ?? Date.now;
  const wait = deps.sleep ?? ((ms: number) => sleep(ms));
  const url = endpointUrl(options.url);
  const { apiVersion } = checkRequest(input);
  let ca: string | undefined;
  if (options.caFile) {
    try {
      ca = readFileSync(options.caFile, "utf8");
    } catch (err) {
      throw new CredentialProviderError(
        `--ca-file ${options.caFile}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`,
      );
    }
  }
  const start = now();
  const deadline = start + options.timeoutSeconds * 1000;
  const perAttemptMs = options.attemptTimeoutSeconds * 1000;
  const agent = new Agent({
    connect: { timeout: Math.min(perAttemptMs, 10_000), ...(ca ? { ca } : {}) },
    connections: 1,
  });
  try {
    let lastReason = "no attempt made";
    let attempts = 0;
    for (let n = 1; ; n++) {
      const remaining = deadline - now();
      if (remaining <= 0) break;
      attempts = n;
      const result = await attempt(url, input, apiVersion, agent, Math.min(perAttemptMs, remaining));
      if (result.output !== undefined) return result.output;
      lastReason = result.reason ?? "unknown failure";
      if (!result.transient) throw new CredentialProviderError(`${url.href}: ${oneLine(lastReason)}`);
      // Back-off as in the sh plugin: 1, 2, 4, 5, 5... s; a longer Retry-After wins, up to 10 s.
      let delay = Math.min(5000, 1000 * 2 ** (n - 1));
      if (result.retryAfterSeconds !== undefined)
        delay = Math.max(delay, Math.min(result.retryAfterSeconds * 1000, 10_000));
      // No sleep that ends at or past the deadline: there would be no time left for another attempt.
      if (now() + delay >= deadline) break;
      await wait(delay);
    }
    throw new CredentialProviderError(
      `${url.href}: gave up after ${attempts} attempt(s) in ${Math.round((now() - start) / 1000)} s: ${oneLine(lastReason)}`,
    );
  } finally {
    await agent.close();
  }
}

/**
 * Reads all of `stream` as UTF-8 (kubelet closes stdin after writing the request).
 * @throws {CredentialProviderError} when it is empty or larger than {@link MAX_CREDENTIAL_PROVIDER_BYTES}
 */
export async function readAll(stream: AsyncIterable<Buffer | string>): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    size += b.length;
    if (size > MAX_CREDENTIAL_PROVIDER_BYTES)
      throw new CredentialProviderError(`stdin is larger than ${MAX_CREDENTIAL_PROVIDER_BYTES} bytes`);
    chunks.push(b);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "")
    throw new CredentialProviderError("stdin is empty: expected a CredentialProviderRequest from kubelet");
  return text;
}
