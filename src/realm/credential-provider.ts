/**
 * `POST /v1/credential-provider`: a kubelet `CredentialProviderRequest` (credentialprovider.kubelet.k8s.io/v1,
 * KEP-4412) in, a `CredentialProviderResponse` out, with an exchange credential as the password.
 *
 * Steps: validate the request (apiVersion, kind, image, serviceAccountToken, serviceAccountAnnotations)
 * -> parse the image and map its registry host to a configured registry `service` (`registries[].hosts`,
 * else the registry whose `service` is that host) -> verify the service-account token against that
 * registry's credential-provider audiences (`registries[].credentialProviderAudiences`, else
 * `credentialProvider.audiences`; a registry that restricts `audiences` without provider audiences of its
 * own is refused; never a registry audience) and require it to be pod-bound (kubelet's
 * always are) -> evaluate the policy for `pull` on the image's repository -> mint an exchange credential
 * (`token/derived.ts`, verified in `authn/derived.ts`) bound to the identity, its annotations and that registry.
 *
 * The answer is exactly what kubelet's strict decoder accepts (staging/src/k8s.io/kubelet/pkg/apis/
 * credentialprovider/v1/types.go): `apiVersion`, `kind`, `cacheKeyType`, `cacheDuration`, `auth`, nothing
 * else. `cacheKeyType` is `Registry` (the credential is good for every repository of that host: the policy
 * decides per scope at `/token`), and `cacheDuration` is half the credential's remaining lifetime (and
 * always leaves the 60 s `/token` requires, plus a margin), so kubelet's cache (keyed by registry plus
 * service account, or by token with `cacheType: Token`) never hands out an expired credential.
 */

import type { Logger } from "pino";
import { type AuditSink, auditSinkOr } from "../audit.js";
import type { Identity } from "../authn/verify.js";
import type { Config, RegistryConfig } from "../config/schema.js";
import { RequestError, safeEcho } from "../errors.js";
import type { Policy } from "../policy/engine.js";
import { parseImageReference } from "../policy/image.js";
import { MIN_CREDENTIAL_LIFETIME_SECONDS, type TokenRealm } from "./realm.js";

/** The only API version that carries a service-account token (kubelet refuses tokenAttributes otherwise). */
const CREDENTIAL_PROVIDER_API_VERSION = "credentialprovider.kubelet.k8s.io/v1";
/** The username of every answer (ignored by `/token`; no `:` so Basic auth stays unambiguous). */
const EXCHANGE_USERNAME = "registry-token-exchange";
/** Most annotations accepted. */
const MAX_ANNOTATIONS = 32;
/** Longest accepted annotation value, characters. */
const MAX_ANNOTATION_VALUE = 1024;

/** Kubernetes qualified name (an annotation key): optional DNS-subdomain prefix, then a name of <= 63. */
const ANNOTATION_KEY =
  /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** kubelet's `CredentialProviderResponse` (v1). */
export interface CredentialProviderResponse {
  apiVersion: typeof CREDENTIAL_PROVIDER_API_VERSION;
  kind: "CredentialProviderResponse";
  cacheKeyType: "Image" | "Registry" | "Global";
  cacheDuration: string;
  auth: Record<string, { username: string; password: string }>;
}

/**
 * Formats whole seconds as a Go `time.Duration` string the way Go prints them (`1h0m0s`, `29m59s`,
 * `45s`, `0s`), which kubelet parses with `time.ParseDuration`.
 */
export function goDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) return `${h}h${m}m${rest}s`;
  if (m > 0) return `${m}m${rest}s`;
  return `${rest}s`;
}

/** Seconds kept between the end of kubelet's cache entry and the point where `/token` refuses the credential. */
const CACHE_SAFETY_MARGIN_SECONDS = 10;

/**
 * How long kubelet may cache a credential that expires in `remainingSeconds`: half of it, rounded down,
 * so a cached credential always has at least half its lifetime left when used, and never so long that
 * less than {@link MIN_CREDENTIAL_LIFETIME_SECONDS} (what `/token` requires) plus a margin would remain;
 * `0` means do not cache.
 */
export function cacheSeconds(remainingSeconds: number): number {
  const usable = remainingSeconds - MIN_CREDENTIAL_LIFETIME_SECONDS - CACHE_SAFETY_MARGIN_SECONDS;
  return Math.max(0, Math.min(Math.floor(remainingSeconds / 2), usable));
}

function bad(message: string): RequestError {
  return new RequestError("invalid_request", message);
}

/** A validated `CredentialProviderRequest`. */
interface ParsedRequest {
  image: string;
  token: string;
  annotations: Record<string, string> | undefined;
}

/**
 * Validates a decoded JSON body as a v1 `CredentialProviderRequest`. Unknown fields are ignored (a newer
 * kubelet may add some); the known ones must have their documented types.
 * @throws {RequestError} `invalid_request` (400) with a message naming the field
 */
export function parseCredentialProviderRequest(body: unknown): ParsedRequest {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw bad("the body must be a CredentialProviderRequest JSON object");
  }
  const b = body as Record<string, unknown>;
  if (b.apiVersion !== CREDENTIAL_PROVIDER_API_VERSION) {
    throw bad(
      `apiVersion ${safeEcho(b.apiVersion ?? "(missing)", 80)} is not supported: use ${CREDENTIAL_PROVIDER_API_VERSION} (set apiVersion in the kubelet CredentialProviderConfig; only v1 carries a service-account token)`,
    );
  }
  if (b.kind !== "CredentialProviderRequest") {
    throw bad(`kind ${safeEcho(b.kind ?? "(missing)", 80)} is not CredentialProviderRequest`);
  }
  if (typeof b.image !== "string" || b.image === "") throw bad('"image" is required and must be a string');
  if (b.serviceAccountToken === undefined || b.serviceAccountToken === "") {
    throw bad(
      '"serviceAccountToken" is missing: set tokenAttributes.serviceAccountTokenAudience and requireServiceAccount: true in the kubelet CredentialProviderConfig',
    );
  }
  if (typeof b.serviceAccountToken !== "string") throw bad('"serviceAccountToken" must be a string');
  let annotations: Record<string, string> | undefined;
  const a = b.serviceAccountAnnotations;
  if (a !== undefined && a !== null) {
    if (typeof a !== "object" || Array.isArray(a)) throw bad('"serviceAccountAnnotations" must be an object');
    const entries = Object.entries(a as Record<string, unknown>);
    if (entries.length > MAX_ANNOTATIONS) throw bad(`more than ${MAX_ANNOTATIONS} serviceAccountAnnotations`);
    for (const [k, v] of entries) {
      if (k.length > 317 || !ANNOTATION_KEY.test(k)) {
        throw bad(`serviceAccountAnnotations key "${safeEcho(k, 80)}" is not a Kubernetes annotation key`);
      }
      if (typeof v !== "string")
        throw bad(`serviceAccountAnnotations["${safeEcho(k, 80)}"] must be a string`);
      if (v.length > MAX_ANNOTATION_VALUE) {
        throw bad(
          `serviceAccountAnnotations["${safeEcho(k, 80)}"] is longer than ${MAX_ANNOTATION_VALUE} characters`,
        );
      }
    }
    if (entries.length > 0) {
      annotations = Object.fromEntries(entries.sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) as Record<
        string,
        string
      >;
    }
  }
  return { image: b.image, token: b.serviceAccountToken, annotations };
}

/**
 * Every annotation key the policy can look at: `match.annotations` keys and `${annotation:<key>}`
 * templates in allow and deny entries.
 */
function policyAnnotationKeys(config: Config): Set<string> {
  const keys = new Set<string>();
  for (const rule of config.policy.rules) {
    for (const k of Object.keys(rule.match.annotations ?? {})) keys.add(k);
    for (const g of [...rule.allow, ...rule.deny]) {
      for (const m of (g.repository ?? "").matchAll(/\$\{annotation:([^}]+)\}/g)) keys.add(m[1]!);
    }
  }
  return keys;
}

/** Dependencies of {@link CredentialProviderExchange}. */
export interface ExchangeDeps {
  config: Config;
  realm: TokenRealm;
  policy: Policy;
  logger: Logger;
  /** Clock, epoch milliseconds. */
  now?: () => number;
}

/** Answers credential-provider requests. See the module doc. */
export class CredentialProviderExchange {
  readonly #deps: ExchangeDeps;
  readonly #now: () => number;
  readonly #byHost: ReadonlyMap<string, RegistryConfig>;
  readonly #policyAnnotationKeys: ReadonlySet<string>;

  /** @param deps config, realm (verification and minting), policy, logger, clock */
  constructor(deps: ExchangeDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    const byHost = new Map<string, RegistryConfig>();
    // Explicit hosts first, then each registry's own service name (the default of `hosts`).
    for (const r of deps.config.registries)
      for (const h of r.hosts ?? []) if (!byHost.has(h)) byHost.set(h, r);
    for (const r of deps.config.registries) {
      const own = r.service.toLowerCase();
      if (r.hosts === undefined && !byHost.has(own)) byHost.set(own, r);
    }
    this.#byHost = byHost;
    this.#policyAnnotationKeys = policyAnnotationKeys(deps.config);
  }

  /** Whether `credentialProvider` is configured (the endpoint answers 404 otherwise). */
  get enabled(): boolean {
    return this.#deps.config.credentialProvider !== undefined;
  }

  /**
   * The registry serving image host `host` (compared case-insensitively).
   * @throws {RequestError} `unknown_service` (400)
   */
  registryForHost(host: string): RegistryConfig {
    const r = this.#byHost.get(host.toLowerCase());
    if (!r) {
      throw new RequestError(
        "unknown_service",
        `image registry "${safeEcho(host, 100)}" is not served by this token realm (add it to registries[].hosts)`,
      );
    }
    return r;
  }

  /**
   * Exchanges a `CredentialProviderRequest` body for a `CredentialProviderResponse`. The audit record
   * (`"exchange credential issued"` / `"... denied"`) goes to `audit` when given, else to the logger.
   * @throws {RequestError} `not_found` when not configured; `invalid_request` / `unknown_service` (400);
   *   credential errors (401); `access_denied` (403) when the policy grants no `pull` on the image;
   *   `keys_unavailable` (503)
   */
  async exchange(
    body: unknown,
    clientAddress?: string,
    audit?: AuditSink,
  ): Promise<CredentialProviderResponse> {
    const cp = this.#deps.config.credentialProvider;
    if (!cp) {
      throw new RequestError(
        "not_found",
        "the credential-provider endpoint is not enabled (set credentialProvider in the config)",
      );
    }
    const req = parseCredentialProviderRequest(body);
    const image = parseImageReference(req.image);
    const registry = this.registryForHost(image.host);
    const verified = await this.#deps.realm.authenticateForExchange(req.token, registry);
    if (!verified.pod) {
      throw new RequestError(
        "missing_claim",
        "service-account token is not bound to a pod (kubelet requests pod-bound tokens for credential providers)",
      );
    }
    const identity: Identity = {
      ...verified,
      annotations: await this.#annotations(verified, req.annotations),
    };
    const [decision] = this.#deps.policy.evaluate(identity, registry.service, [
      { type: "repository", name: image.repository, actions: ["pull"] },
    ]);
    if (!decision || decision.granted.length === 0) {
      this.#audit(audit, "denied", identity, registry, image.repository, clientAddress);
      throw new RequestError(
        "access_denied",
        `service account ${identity.namespace}/${identity.serviceAccount.name} of cluster "${identity.cluster}" may not pull "${image.repository}" from "${registry.service}"`,
      );
    }
    const nowMs = this.#now();
    const left = Math.min(cp.credentialTtlSeconds, verified.expiresAt - Math.floor(nowMs / 1000));
    if (left < MIN_CREDENTIAL_LIFETIME_SECONDS) {
      // The credential would be refused at /token before anyone could use it.
      throw new RequestError(
        "token_expired",
        `service-account token expires in ${Math.max(0, left)} s; at least ${MIN_CREDENTIAL_LIFETIME_SECONDS} s are needed`,
      );
    }
    const credential = await this.#deps.realm.mintExchangeCredential(
      registry,
      identity,
      Math.floor(nowMs / 1000) + cp.credentialTtlSeconds,
    );
    const remaining = credential.expiresAt - Math.floor(nowMs / 1000);
    this.#audit(audit, "issued", identity, registry, image.repository, clientAddress, {
      jti: credential.jti,
      expiresAt: new Date(credential.expiresAt * 1000).toISOString(),
      rules: decision.allowedBy,
    });
    return {
      apiVersion: CREDENTIAL_PROVIDER_API_VERSION,
      kind: "CredentialProviderResponse",
      cacheKeyType: "Registry",
      cacheDuration: goDuration(cacheSeconds(remaining)),
      auth: { [image.host]: { username: EXCHANGE_USERNAME, password: credential.token } },
    };
  }

  /**
   * The annotations policy sees: the request's (asserted by the caller), or with `annotations: fromCluster`
   * those of the ServiceAccount object the cluster has now (its uid checked against the token's), limited
   * to the keys the policy names (the others cannot change a decision, and a credential carries them).
   */
  async #annotations(
    identity: Identity,
    fromRequest: Record<string, string> | undefined,
  ): Promise<Record<string, string> | undefined> {
    const reviewer = this.#deps.realm.reviewer;
    if (!reviewer?.annotationsFromCluster(identity.cluster)) return fromRequest;
    const sa = await reviewer.serviceAccount(identity);
    const picked = Object.entries(sa.annotations)
      .filter(([k]) => this.#policyAnnotationKeys.has(k))
      .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    if (identity.review) identity.review.serviceAccountUid = sa.uid;
    return picked.length > 0 ? Object.fromEntries(picked) : undefined;
  }

  #audit(
    sink: AuditSink | undefined,
    decision: "issued" | "denied",
    identity: Identity,
    registry: RegistryConfig,
    repository: string,
    clientAddress: string | undefined,
    extra: Record<string, unknown> = {},
  ): void {
    auditSinkOr(sink, this.#deps.logger)(
      {
        decision,
        kind: "exchange-credential",
        time: new Date(this.#now()).toISOString(),
        cluster: identity.cluster,
        namespace: identity.namespace,
        serviceAccount: identity.serviceAccount.name,
        pod: identity.pod?.name,
        service: registry.service,
        repository,
        requested: [`repository:${repository}:pull`],
        granted: decision === "issued" ? [`repository:${repository}:pull`] : [],
        annotationKeys: Object.keys(identity.annotations ?? {}),
        saTokenId: identity.tokenId,
        client: clientAddress,
        ...extra,
      },
      decision === "issued" ? "exchange credential issued" : "exchange credential denied",
    );
  }
}
