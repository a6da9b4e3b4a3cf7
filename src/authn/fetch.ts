/**
 * The only outbound HTTP this service makes: fetching OIDC discovery documents and JWKS.
 * Every fetch has a connect timeout and a total timeout, a response size cap, a content-type check and a
 * bounded number of redirects; the bearer token is only sent to the origin it was configured for, and
 * never after a redirect.
 */
import { readFileSync } from "node:fs";
import { Agent, request } from "undici";
import { RequestError } from "../errors.js";
import { keysUnavailable } from "./keys-unavailable.js";

/** Limits and trust for one cluster's fetches. */
export interface FetchOptions {
  /** Total time budget per fetch, including redirects, milliseconds. */
  timeoutMs: number;
  /** Largest accepted response body, bytes. */
  maxBytes: number;
  /** How many redirects to follow (0 = none). */
  maxRedirects: number;
  /** PEM CA bundle file trusted for TLS (in-cluster CA), read once per {@link JsonFetcher}. */
  caFile?: string | undefined;
  /** File whose content is sent as `Authorization: Bearer` (re-read on every fetch: kubelet rotates it). */
  bearerTokenFile?: string | undefined;
  /**
   * The only origin (scheme, host and port, as `URL.origin`) the bearer token is sent to, and only on
   * the first request of a fetch: never to another origin (a discovery `jwks_uri` elsewhere), never to
   * the target of a redirect, even on the same origin. Without it the token is never sent.
   */
  bearerTokenOrigin?: string | undefined;
}

/** A fetched JSON document and its freshness. */
export interface FetchedJson {
  /** The parsed body. */
  body: unknown;
  /** `Cache-Control: max-age` of the response in seconds, if present. */
  maxAgeSeconds: number | undefined;
  /** The final URL after redirects. */
  url: string;
}

/** Parses `max-age` out of a Cache-Control header; `no-store`/`no-cache` give 0. */
function parseMaxAge(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header.join(",") : header;
  if (!value) return undefined;
  if (/\b(no-store|no-cache)\b/i.test(value)) return 0;
  const m = /\bmax-age\s*=\s*"?(\d{1,10})"?/i.exec(value);
  return m ? Number(m[1]) : undefined;
}

/**
 * Fetches JSON documents for one cluster with its trust and limits.
 * Errors are {@link RequestError} `keys_unavailable` with a log-only detail naming the cause.
 */
export class JsonFetcher {
  readonly #options: FetchOptions;
  readonly #agent: Agent;

  /** @param options limits and trust, see {@link FetchOptions} */
  constructor(options: FetchOptions) {
    this.#options = options;
    const ca = options.caFile ? readFileSync(options.caFile, "utf8") : undefined;
    this.#agent = new Agent({
      connect: { timeout: Math.min(options.timeoutMs, 10_000), ...(ca ? { ca } : {}) },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connections: 4,
    });
  }

  /**
   * GETs `url` and parses it as JSON.
   * @throws {RequestError} `keys_unavailable` on network error, timeout, non-2xx, wrong content type,
   *   oversize body, too many redirects or invalid JSON
   */
  async getJson(url: string): Promise<FetchedJson> {
    const signal = AbortSignal.timeout(this.#options.timeoutMs);
    let current = url;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { accept: "application/json, application/jwk-set+json" };
      // The token is a credential for the API server the config names: a redirect (a compromised or
      // misconfigured endpoint, or a proxy) could forward it anywhere, so it goes out on the first hop only.
      if (
        this.#options.bearerTokenFile &&
        hop === 0 &&
        new URL(current).origin === this.#options.bearerTokenOrigin
      ) {
        const token = readFileSync(this.#options.bearerTokenFile, "utf8").trim();
        if (token) headers.authorization = `Bearer ${token}`;
      }
      let res: Awaited<ReturnType<typeof request>>;
      try {
        res = await request(current, { method: "GET", headers, dispatcher: this.#agent, signal });
      } catch (err) {
        throw unavailable(url, `request failed: ${describe(err)}`, err);
      }
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
        await res.body.dump();
        if (hop >= this.#options.maxRedirects)
          throw unavailable(url, `too many redirects (> ${this.#options.maxRedirects})`);
        const next = new URL(String(res.headers.location), current);
        if (next.protocol !== "https:" && next.protocol !== "http:")
          throw unavailable(url, "redirect to a non-HTTP URL");
        if (new URL(current).protocol === "https:" && next.protocol === "http:") {
          throw unavailable(url, "redirect from https to http refused");
        }
        current = next.toString();
        continue;
      }
      if (res.statusCode < 200 || res.statusCode >= 300) {
        await res.body.dump();
        throw unavailable(url, `HTTP ${res.statusCode}`);
      }
      const type = String(res.headers["content-type"] ?? "");
      // The media type itself must be JSON (`application/json`, `application/jwk-set+json`, ...): a
      // substring test would also take `text/html; profile=json` or `application/jsonp`.
      const mediaType = type.split(";")[0]!.trim().toLowerCase();
      if (type && !/^[a-z]+\/(?:[a-z0-9.!#$&^_-]+\+)?json$/.test(mediaType)) {
        await res.body.dump();
        throw unavailable(url, `unexpected content-type "${type.slice(0, 100)}"`);
      }
      const declared = Number(res.headers["content-length"] ?? Number.NaN);
      if (Number.isFinite(declared) && declared > this.#options.maxBytes) {
        await res.body.dump();
        throw unavailable(url, `response larger than ${this.#options.maxBytes} bytes`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length;
          if (size > this.#options.maxBytes) {
            res.body.destroy();
            throw unavailable(url, `response larger than ${this.#options.maxBytes} bytes`);
          }
          chunks.push(chunk as Buffer);
        }
      } catch (err) {
        if (err instanceof RequestError) throw err;
        throw unavailable(url, `reading body failed: ${describe(err)}`, err);
      }
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        throw unavailable(url, "body is not valid JSON");
      }
      return { body, maxAgeSeconds: parseMaxAge(res.headers["cache-control"]), url: current };
    }
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    await this.#agent.close();
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code ? `${code} ${err.message}` : `${err.name}: ${err.message}`;
  }
  return String(err);
}

function unavailable(url: string, reason: string, cause?: unknown): RequestError {
  return keysUnavailable({ url, reason }, { retryAfterSeconds: 5, cause });
}
