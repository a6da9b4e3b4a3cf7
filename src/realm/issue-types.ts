/** What the token realm (`realm/realm.ts`) takes and answers: its dependencies, a token request and an issued token. */
import type { Logger } from "pino";
import type { AuditSink } from "../audit.js";
import type { ClusterReviewer } from "../authn/review.js";
import type { Identity, ServiceAccountVerifier } from "../authn/verify.js";
import type { CacheSealer } from "../cache/seal.js";
import type { CacheStore } from "../cache/store.js";
import type { Config } from "../config/schema.js";
import type { PublishedKey, SigningKey } from "../jose/signing-key.js";
import type { Policy, ScopeDecision } from "../policy/engine.js";
import type { Scope } from "../policy/scope.js";
import type { CredentialUse } from "./credentials.js";
import type { RealmStats } from "./stats.js";

/** A request for a registry token. */
export interface IssueRequest {
  /** The presented credential (a service-account JWT, an exchange credential or a refresh token). Never logged. */
  credential: string;
  /** How it was presented (default `password`). */
  use?: CredentialUse | undefined;
  /** Also return a refresh token (`offline_token=true`, `access_type=offline`). */
  offline?: boolean | undefined;
  /** The `service` parameter. */
  service: string;
  /** Parsed scopes (empty = login). */
  scopes: Scope[];
  /** Client address, for the audit log. */
  clientAddress?: string | undefined;
  /**
   * Where the `"token issued"` audit record goes (routes add it to the request's access line); without
   * one the realm writes it as a line of its own.
   */
  audit?: AuditSink | undefined;
}

/** An issued registry token and the decision behind it. */
export interface IssueResult {
  /** The registry bearer token. */
  token: string;
  /** `jti` of the token (safe to log). */
  jti: string;
  /** Issue time, epoch seconds. */
  issuedAt: number;
  /** Remaining lifetime when answered, seconds. */
  expiresIn: number;
  /** Who asked. */
  identity: Identity;
  /** Per-scope decisions. */
  decisions: ScopeDecision[];
  /** Granted scopes in `type:name:actions` form, space-joined (OAuth2 `scope` of the response). */
  grantedScope: string;
  /** True when an already-issued token was reused from the cache. */
  cached: boolean;
  /** A refresh token bound to the identity and service, when `offline` was asked (never outlives the credential). */
  refreshToken?: string | undefined;
}

/** Dependencies of a `TokenRealm`. */
export interface RealmDeps {
  config: Config;
  verifier: ServiceAccountVerifier;
  policy: Policy;
  /** Signing key per registry `service`. */
  signingKeys: ReadonlyMap<string, SigningKey>;
  /**
   * Every key per registry `service` whose exchange credentials and refresh tokens are accepted: the
   * signing key first, then `publishedKeys` (a rotation's next and previous keys). Default: the signing key.
   */
  verificationKeys?: ReadonlyMap<string, readonly PublishedKey[]>;
  store: CacheStore;
  /**
   * Names and seals identity and token cache entries (`cache/seal.ts`), so a reader of the store finds
   * no usable identity or token and a writer cannot forge one. Replicas that share a store must share
   * its secret (`runtime.ts` derives it from the signing keys). Default: a random secret of this process.
   */
  sealer?: CacheSealer | undefined;
  logger: Logger;
  /** Clock, epoch milliseconds. */
  now?: () => number;
  /** Called once per answered registry token (`reused`: served from the token cache), for metrics. */
  onIssue?: (event: { service: string; reused: boolean }) => void;
  /** Counters to add to (shared across config reloads); a fresh set when omitted. */
  stats?: RealmStats;
  /**
   * Reviews tokens of clusters with `verification: tokenReview|both` (`authn/review.ts`). Without one,
   * every token's signature is checked offline and nothing is reviewed.
   */
  reviewer?: ClusterReviewer | undefined;
}
