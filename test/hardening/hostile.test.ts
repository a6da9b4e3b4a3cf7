/**
 * Hostile input, one table. Each row is something an attacker (or a broken client) can send; it runs
 * against `GET /token` (mirrored on `GET /v1/explain` where that endpoint takes the same input) and,
 * where it applies, `POST /token` and `POST /v1/credential-provider`, each with the exact status and the
 * exact error body, checked against the OpenAPI contract too.
 *
 * Across the whole table: no answer is a 5xx, no error body leaks internals or echoes any piece of a
 * credential, and no log line (captured at trace level for every row) holds a 20-character piece of any
 * token, password, refresh token, exchange credential or minted registry token.
 *
 * Set-up: a Kubernetes-faithful issuer with two published keys, two registries with their own audiences
 * (`registry.test`, `other.test`, same signing key and issuer, so only `aud` keeps their credentials
 * apart), the credential-provider endpoint, and a frozen clock.
 */
import { createPublicKey, type KeyObject, randomBytes } from "node:crypto";
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from "fastify";
import { decodeJwt, type JWTHeaderParameters, type JWTPayload, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { type LocalIssuer, type LocalTokenRequest, startLocalIssuerServer } from "../../src/local/issuer.js";
import { NOW, NOW_S } from "../helpers/clock.js";
import { CP_API_VERSION, CP_AUDIENCE, OTHER_SERVICE, REGISTRY_HOST } from "../helpers/credential-provider.js";
import { basic, capturingLogger, SERVICE, signingKeyFiles, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { SecretLedger } from "./helpers/secrets.js";

/** Frozen "now": 2026-11-30T12:00:00Z. */
const CHALLENGE = 'Basic realm="registry-token-exchange"';
const IMAGE = `${REGISTRY_HOST}/team-a/app:v1`;
const SCOPE = "repository:team-a/app:pull";
const FORM = "application/x-www-form-urlencoded";

type Endpoint = "GET /token" | "GET /v1/explain" | "POST /token" | "POST /v1/credential-provider";

/** What a probe must answer: the exact status and, for errors, the exact JSON body. */
interface Expected {
  status: number;
  /** The exact body; `undefined` for a success (checked against the contract only). */
  body?: unknown;
}

/** One request of a row. */
interface Probe {
  endpoint: Endpoint;
  request: InjectOptions;
  expected: Expected;
  /** Skip the contract check (a path the contract does not list). */
  unlisted?: boolean;
}

/** One row: a name and the probes it runs. */
interface Row {
  name: string;
  probes: (k: Kit) => Promise<Probe[]>;
}

/** What rows build their inputs with. Every credential made here is recorded as a secret. */
interface Kit {
  app: FastifyInstance;
  issuer: LocalIssuer;
  url: string;
  /** The older of the two published cluster keys (the issuer signs with the newer one). */
  oldKey: KeyObject;
  secret: (s: string) => string;
  /** A valid bound token for team-a/builder (claims and header overridable). */
  sa: (audience?: string, req?: Partial<LocalTokenRequest>) => Promise<string>;
  /** Claims of a valid token (to re-sign with hostile headers). */
  claims: (audience?: string) => Promise<JWTPayload>;
  /** Signs `claims` with `key` under `header`. */
  signed: (
    key: KeyObject | Uint8Array,
    header: Record<string, unknown>,
    claims: JWTPayload,
  ) => Promise<string>;
  /** An exchange credential for `registry.test` from the credential-provider endpoint. */
  exchangeCredential: () => Promise<string>;
  /** A refresh token from `GET /token?offline_token=true` at `service`. */
  refreshToken: (service: string) => Promise<string>;
}

/* ---------------------------------------------- expectations ---------------------------------------------- */

const unauthorized = (reason: string, message: string): Expected => ({
  status: 401,
  body: { errors: [{ code: "UNAUTHORIZED", message, detail: { reason } }] },
});
const unsupported = (status: number, reason: string, message: string): Expected => ({
  status,
  body: { errors: [{ code: "UNSUPPORTED", message, detail: { reason } }] },
});
const oauth = (status: number, error: string, description: string): Expected => ({
  status,
  body: { error, error_description: description },
});
const OK: Expected = { status: 200 };

/* ------------------------------------------------ requests ------------------------------------------------ */

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
const query = (params: Array<[string, string]>) => new URLSearchParams(params).toString();

/** `GET /token` with `params`, mirrored on `GET /v1/explain` when `explain` (same input, same error). */
function getProbes(
  params: Array<[string, string]> | string,
  authorization: string | undefined,
  expected: Expected,
  options: { explain?: boolean; headers?: Record<string, string> } = {},
): Probe[] {
  const qs = typeof params === "string" ? params : query(params);
  const headers = { ...(authorization === undefined ? {} : { authorization }), ...options.headers };
  const probes: Probe[] = [
    { endpoint: "GET /token", request: { method: "GET", url: `/token?${qs}`, headers }, expected },
  ];
  if (options.explain) {
    probes.push({
      endpoint: "GET /v1/explain",
      request: { method: "GET", url: `/v1/explain?${qs}`, headers },
      expected,
    });
  }
  return probes;
}

/** `POST /token` with a form (or any raw body and content type). */
function postProbe(
  form: Array<[string, string]> | string,
  expected: Expected,
  contentType = FORM,
  extra: { url?: string; headers?: Record<string, string> } = {},
): Probe {
  return {
    endpoint: "POST /token",
    request: {
      method: "POST",
      url: extra.url ?? "/token",
      headers: { "content-type": contentType, ...extra.headers },
      payload: typeof form === "string" ? form : query(form),
    },
    expected,
  };
}

/** `POST /v1/credential-provider` with a JSON body (or any raw body and content type). */
function cpProbe(
  body: unknown,
  expected: Expected,
  contentType = "application/json",
  extra: { url?: string; headers?: Record<string, string> } = {},
): Probe {
  return {
    endpoint: "POST /v1/credential-provider",
    request: {
      method: "POST",
      url: extra.url ?? "/v1/credential-provider",
      headers: { "content-type": contentType, ...extra.headers },
      payload: typeof body === "string" ? body : JSON.stringify(body),
    },
    expected,
  };
}

function cpRequest(token: string, image = IMAGE): Record<string, unknown> {
  return { apiVersion: CP_API_VERSION, kind: "CredentialProviderRequest", image, serviceAccountToken: token };
}

const passwordForm = (password: string, extra: Array<[string, string]> = []): Array<[string, string]> => [
  ["grant_type", "password"],
  ["service", SERVICE],
  ["scope", SCOPE],
  ["username", "x"],
  ["password", password],
  ...extra,
];

/**
 * A credential refused the same way everywhere: presented as the Basic password (GET, and explain), as the
 * password grant's `password` (POST: `invalid_grant`), and, minted for the credential-provider audience,
 * as `serviceAccountToken` (unless `cp` is false).
 */
function credentialRow(
  name: string,
  make: (k: Kit, audience: string) => Promise<string>,
  reason: string,
  message: string,
  options: { cp?: boolean } = {},
): Row {
  return {
    name,
    probes: async (k) => {
      const token = await make(k, SERVICE);
      const probes = [
        ...getProbes(
          [
            ["service", SERVICE],
            ["scope", SCOPE],
          ],
          basic(token),
          unauthorized(reason, message),
          {
            explain: true,
          },
        ),
        postProbe(passwordForm(token), oauth(401, "invalid_grant", message)),
      ];
      if (options.cp !== false) {
        probes.push(cpProbe(cpRequest(await make(k, CP_AUDIENCE)), unauthorized(reason, message)));
      }
      return probes;
    },
  };
}

/** A query/form scope refused with `invalid_scope` on GET and POST. */
function scopeRow(name: string, scopes: string[], message: string): Row {
  return {
    name,
    probes: async (k) => {
      const sa = await k.sa();
      const params: Array<[string, string]> = [
        ["service", SERVICE],
        ...scopes.map((s): [string, string] => ["scope", s]),
      ];
      return [
        ...getProbes(params, basic(sa), unsupported(400, "invalid_scope", message), { explain: true }),
        postProbe(
          [["grant_type", "password"], ["password", sa], ...params],
          oauth(400, "invalid_scope", message),
        ),
      ];
    },
  };
}

const junk = (n: number) =>
  randomBytes(Math.ceil((n * 3) / 4))
    .toString("base64url")
    .slice(0, n);
const legacyClaims = {
  iss: "kubernetes/serviceaccount",
  "kubernetes.io/serviceaccount/namespace": "team-a",
  "kubernetes.io/serviceaccount/secret.name": "builder-token-x7k2p",
  "kubernetes.io/serviceaccount/service-account.name": "builder",
  "kubernetes.io/serviceaccount/service-account.uid": "0d9b2b6a-6b8a-4b43-9d0c-3c1f3b0d6a11",
  sub: "system:serviceaccount:team-a:builder",
};
const LEGACY =
  "legacy Secret-based service-account tokens never expire and are not accepted; use a projected (bound) token";
const MISSING =
  "authentication required: send the service-account token as the Basic password or as a Bearer token";

/* -------------------------------------------------- table -------------------------------------------------- */

const ROWS: Row[] = [
  credentialRow(
    "not a JWT",
    async (k) => k.secret(`not-a-jwt-${junk(40)}`),
    "malformed_token",
    "credential is not a JWT (expected header.payload.signature)",
  ),
  credentialRow(
    "JWT-shaped, but not base64url JSON",
    async (k) => k.secret(`${junk(30)}.${junk(60)}.${junk(40)}`),
    "malformed_token",
    "credential is not a JWT (header or payload is not base64url JSON)",
  ),
  credentialRow(
    "alg: none (unsigned)",
    async (k, aud) => k.secret(`${b64url({ alg: "none", typ: "JWT" })}.${b64url(await k.claims(aud))}.`),
    "unsupported_algorithm",
    '"alg" none is not allowed for this issuer',
  ),
  credentialRow(
    "HS256 signed with the cluster's public key as the HMAC secret (key confusion)",
    async (k, aud) => {
      const pem = createPublicKey(k.issuer.keys[0]!).export({ type: "spki", format: "pem" }) as string;
      return k.signed(
        new TextEncoder().encode(pem),
        { alg: "HS256", kid: k.issuer.kid },
        await k.claims(aud),
      );
    },
    "unsupported_algorithm",
    '"alg" HS256 is not allowed for this issuer',
  ),
  credentialRow(
    "unknown kid",
    (k, aud) => k.sa(aud, { header: { kid: "hostile-unknown-kid" } }),
    "unknown_key",
    'token signed by unknown key with ID "hostile-unknown-kid"',
  ),
  {
    name: 'kid: "" with two candidate keys published, signed by the older one (accepted)',
    probes: async (k) => {
      const token = (aud: string) =>
        k.claims(aud).then((c) => k.signed(k.oldKey, { alg: "RS256", kid: "" }, c));
      return [
        ...getProbes(
          [
            ["service", SERVICE],
            ["scope", SCOPE],
          ],
          basic(await token(SERVICE)),
          OK,
          { explain: true },
        ),
        postProbe(passwordForm(await token(SERVICE)), OK),
        cpProbe(cpRequest(await token(CP_AUDIENCE)), OK),
      ];
    },
  },
  credentialRow(
    "expired an hour ago",
    (k, aud) => k.sa(aud, { nowMs: NOW - 7_200_000 }),
    "token_expired",
    "service-account token has expired",
  ),
  credentialRow(
    "nbf in the future beyond the leeway",
    (k, aud) => k.sa(aud, { claims: { nbf: NOW_S + 31 } }),
    "token_not_yet_valid",
    'service-account token is not valid yet ("nbf" is in the future)',
  ),
  credentialRow(
    "iat in the future beyond the leeway",
    (k, aud) => k.sa(aud, { claims: { iat: NOW_S + 31 } }),
    "token_not_yet_valid",
    'service-account token is not valid yet ("iat" is in the future)',
  ),
  credentialRow(
    "missing exp",
    (k, aud) => k.sa(aud, { claims: { exp: undefined } }),
    "missing_claim",
    'service-account token has no "exp" claim',
  ),
  credentialRow(
    "sub names another namespace than the kubernetes.io claim",
    (k, aud) => k.sa(aud, { claims: { sub: "system:serviceaccount:team-b:builder" } }),
    "invalid_subject",
    '"sub" claim does not agree with the "kubernetes.io" claim',
  ),
  credentialRow(
    "legacy Secret-based token (no exp, no aud), signed by the cluster's key",
    async (k) => k.signed(k.issuer.keys[0]!, { alg: "RS256", kid: k.issuer.kid }, legacyClaims),
    "legacy_token",
    LEGACY,
  ),
  credentialRow(
    "issuer of another cluster",
    (k, aud) => k.sa(aud, { claims: { iss: "https://evil.example.com" } }),
    "unknown_issuer",
    '"iss" claim "https://evil.example.com" is not a trusted cluster issuer',
  ),
  {
    name: "issuer differing by a trailing slash",
    probes: async (k) =>
      credentialRow(
        "",
        (kit, aud) => kit.sa(aud, { claims: { iss: `${kit.url}/` } }),
        "invalid_issuer",
        '"iss" claim differs from a trusted issuer by a trailing slash',
      ).probes(k),
  },
  {
    name: "audience of another service (other.test's at registry.test; registry.test's at the credential provider)",
    probes: async (k) => {
      const other = await k.sa(OTHER_SERVICE);
      const message = '"aud" claim does not contain an audience accepted here';
      return [
        ...getProbes([["service", SERVICE]], basic(other), unauthorized("invalid_audience", message), {
          explain: true,
        }),
        postProbe(passwordForm(other), oauth(401, "invalid_grant", message)),
        cpProbe(
          cpRequest(await k.sa(SERVICE)),
          unauthorized("invalid_audience", '"aud" claim does not contain an audience accepted here'),
        ),
      ];
    },
  },
  credentialRow(
    "a registry token this service minted, presented as a credential",
    async (k) => {
      const res = await k.app.inject({
        method: "GET",
        url: `/token?${query([
          ["service", SERVICE],
          ["scope", SCOPE],
        ])}`,
        headers: { authorization: basic(await k.sa()) },
      });
      expect(res.statusCode).toBe(200);
      return k.secret(res.json().token as string);
    },
    "unknown_issuer",
    '"iss" claim "registry-token-exchange" is not a trusted cluster issuer',
  ),
  {
    name: "HS256 exchange credential signed with this service's own public key (key confusion, derived verifier)",
    probes: async (k) => {
      const key = k.app.exchange.signingKeys.get(SERVICE)!;
      const pem = key.publicKey.export({ type: "spki", format: "pem" }) as string;
      const forged = await k.signed(
        new TextEncoder().encode(pem),
        { alg: "HS256", typ: "rte-exchange+jwt", kid: key.kid },
        {
          ...(await k.claims(SERVICE)),
          iss: "urn:registry-token-exchange:exchange-credential:registry-token-exchange",
        },
      );
      const message = 'exchange credential "alg" is not allowed';
      return [
        ...getProbes([["service", SERVICE]], basic(forged), unauthorized("unsupported_algorithm", message), {
          explain: true,
        }),
        postProbe(passwordForm(forged), oauth(401, "invalid_grant", message)),
      ];
    },
  },
  credentialRow(
    `token over 8192 characters (JWT-shaped, 9000)`,
    async (k) => k.secret(`${junk(3000)}.${junk(3000)}.${junk(2998)}`),
    "malformed_token",
    "service-account token is longer than 8192 characters",
  ),
  {
    name: "Authorization header over 12 KiB",
    probes: async (k) =>
      getProbes(
        [["service", SERVICE]],
        `Bearer ${k.secret(junk(12_400))}`,
        unauthorized("malformed_credentials", "Authorization header is too long"),
        { explain: true },
      ),
  },
  {
    name: "header section over 16 KiB (JSON 431, not Node's bare one)",
    probes: async (k) => {
      const headers = { "x-filler": junk(17_000) };
      const sa = await k.sa();
      const message = "request headers are larger than 16384 bytes";
      return [
        ...getProbes([["service", SERVICE]], basic(sa), unsupported(431, "invalid_request", message), {
          explain: true,
          headers,
        }),
        postProbe(passwordForm(sa), oauth(431, "invalid_request", message), FORM, { headers }),
        cpProbe(cpRequest(await k.sa(CP_AUDIENCE)), unsupported(431, "invalid_request", message), undefined, {
          headers,
        }),
      ];
    },
  },
  {
    name: "request target over 8 KiB (query)",
    probes: async (k) => {
      const sa = await k.sa();
      const long = `service=${SERVICE}&client_id=${"c".repeat(8200)}`;
      const message = "request URL is longer than 8192 bytes";
      return [
        ...getProbes(long, basic(sa), unsupported(414, "invalid_request", message), { explain: true }),
        postProbe(passwordForm(sa), oauth(414, "invalid_request", message), FORM, { url: `/token?${long}` }),
        cpProbe(cpRequest(await k.sa(CP_AUDIENCE)), unsupported(414, "invalid_request", message), undefined, {
          url: `/v1/credential-provider?${long}`,
        }),
      ];
    },
  },
  {
    name: "body over 64 KiB",
    probes: async (k) => [
      postProbe(
        passwordForm(await k.sa(), [["filler", "f".repeat(70_000)]]),
        oauth(413, "invalid_request", "request body is too large"),
      ),
      cpProbe(
        { ...cpRequest(await k.sa(CP_AUDIENCE)), filler: "f".repeat(70_000) },
        unsupported(413, "payload_too_large", "request body is too large"),
      ),
    ],
  },
  scopeRow(
    "non-ASCII in a scope",
    ["repository:tëam-a/app:pull"],
    'scope "repository:tëam-a/app:pull" has an invalid repository name',
  ),
  scopeRow(
    "control characters in a scope (BEL, NUL, LF)",
    ["repository:team-a/a\u0007p\u0000p\n:pull"],
    'scope "repository:team-a/a?p?p?:pull" has an invalid repository name',
  ),
  scopeRow(
    "scope with too many colons",
    ["repository:team-a:app:extra:pull"],
    'scope "repository:team-a:app:extra:pull" has an invalid repository name',
  ),
  scopeRow(
    "scope in upper case",
    ["repository:Team-A/App:pull"],
    'scope "repository:Team-A/App:pull" has an invalid repository name',
  ),
  scopeRow("scope with an empty name", ["repository::pull"], 'scope "repository::pull" has an empty name'),
  scopeRow(
    "scope of an unknown type",
    ["blob:team-a/app:pull"],
    'scope "blob:team-a/app:pull" has unknown resource type "blob"',
  ),
  scopeRow(
    "scope with an unknown action",
    ["repository:team-a/app:steal"],
    'scope "repository:team-a/app:steal" has unknown action "steal"',
  ),
  scopeRow(
    "33 scopes (over the cap of 32)",
    Array.from({ length: 33 }, (_, i) => `repository:team-a/app${i}:pull`),
    "too many scopes (more than 32)",
  ),
  {
    name: "1,000 scopes (GET: the URL cap answers first; POST: the scope cap)",
    probes: async (k) => {
      const sa = await k.sa();
      const scopes = Array.from({ length: 1000 }, (_, i) => `repository:team-a/app${i}:pull`);
      return [
        ...getProbes(
          [["service", SERVICE], ...scopes.map((s): [string, string] => ["scope", s])],
          basic(sa),
          unsupported(414, "invalid_request", "request URL is longer than 8192 bytes"),
          { explain: true },
        ),
        postProbe(
          [
            ["grant_type", "password"],
            ["service", SERVICE],
            ["scope", scopes.join(" ")],
            ["password", sa],
          ],
          oauth(400, "invalid_scope", "too many scopes (more than 32)"),
        ),
      ];
    },
  },
  {
    name: "CR/LF and control characters in service (not reflected raw)",
    probes: async (k) => {
      const message = 'unknown service "registry.test??X-Injected: 1?": not served here';
      const service = "registry.test\r\nX-Injected: 1\u0000";
      const sa = await k.sa();
      return [
        ...getProbes([["service", service]], basic(sa), unsupported(400, "unknown_service", message), {
          explain: true,
        }),
        postProbe(
          [
            ["grant_type", "password"],
            ["service", service],
            ["password", sa],
          ],
          oauth(400, "invalid_request", message),
        ),
      ];
    },
  },
  {
    name: "Basic without a colon",
    probes: async (k) =>
      getProbes(
        [["service", SERVICE]],
        `Basic ${Buffer.from(await k.sa()).toString("base64")}`,
        unauthorized("malformed_credentials", 'Basic credential has no ":" between username and password'),
        { explain: true },
      ),
  },
  {
    name: "Basic with bad base64",
    probes: async () =>
      getProbes(
        [["service", SERVICE]],
        "Basic %%%not*base64",
        unauthorized("malformed_credentials", "Basic credential is not valid base64"),
        {
          explain: true,
        },
      ),
  },
  {
    name: "Basic with an empty password",
    probes: async () =>
      getProbes(
        [["service", SERVICE]],
        `Basic ${Buffer.from("user:").toString("base64")}`,
        unauthorized("malformed_credentials", "Basic credential has an empty password"),
        { explain: true },
      ),
  },
  {
    name: "Basic whose password is not UTF-8",
    probes: async (k) =>
      getProbes(
        [["service", SERVICE]],
        `Basic ${Buffer.concat([Buffer.from("x:"), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(await k.sa())]).toString("base64")}`,
        unauthorized("malformed_token", "credential is not a JWT (expected header.payload.signature)"),
        { explain: true },
      ),
  },
  {
    name: "credential in the query string instead of the Authorization header (ignored)",
    probes: async (k) => {
      const sa = await k.sa();
      return getProbes(
        [
          ["service", SERVICE],
          ["password", sa],
          ["access_token", sa],
        ],
        undefined,
        unauthorized("missing_credentials", MISSING),
        { explain: true },
      );
    },
  },
  {
    name: "duplicate parameters (service, offline_token, grant_type, password)",
    probes: async (k) => {
      const sa = await k.sa();
      return [
        ...getProbes(
          [
            ["service", SERVICE],
            ["service", OTHER_SERVICE],
          ],
          basic(sa),
          unsupported(400, "invalid_request", 'parameter "service" must not be repeated'),
          { explain: true },
        ),
        ...getProbes(
          [
            ["service", SERVICE],
            ["offline_token", "true"],
            ["offline_token", "false"],
          ],
          basic(sa),
          unsupported(400, "invalid_request", 'parameter "offline_token" must not be repeated'),
        ),
        postProbe(
          [["grant_type", "password"], ...passwordForm(sa)],
          oauth(400, "invalid_request", 'parameter "grant_type" must not be repeated'),
        ),
        postProbe(
          passwordForm(sa, [["password", await k.sa()]]),
          oauth(400, "invalid_request", 'parameter "password" must not be repeated'),
        ),
      ];
    },
  },
  {
    name: "POST /token with a JSON body",
    probes: async (k) => [
      postProbe(
        JSON.stringify({ grant_type: "password", service: SERVICE, password: await k.sa() }),
        oauth(400, "invalid_request", "POST /token needs an application/x-www-form-urlencoded body"),
        "application/json",
      ),
    ],
  },
  {
    name: "multipart bodies",
    probes: async (k) => {
      const sa = await k.sa();
      const body = [
        "--b0undary",
        'Content-Disposition: form-data; name="grant_type"',
        "",
        "password",
        "--b0undary",
        'Content-Disposition: form-data; name="password"',
        "",
        sa,
        "--b0undary--",
        "",
      ].join("\r\n");
      const type = "multipart/form-data; boundary=b0undary";
      return [
        postProbe(body, oauth(415, "invalid_request", "unsupported Content-Type for this endpoint"), type),
        cpProbe(
          body,
          unsupported(415, "unsupported_media_type", "unsupported Content-Type for this endpoint"),
          type,
        ),
      ];
    },
  },
  {
    name: "credential provider with a form body",
    probes: async (k) => [
      cpProbe(
        query([["serviceAccountToken", await k.sa(CP_AUDIENCE)]]),
        unsupported(
          415,
          "unsupported_media_type",
          "POST /v1/credential-provider needs an application/json CredentialProviderRequest body",
        ),
        FORM,
      ),
    ],
  },
  {
    name: "credential provider: JSON prototype poisoning, 20,000-deep nesting, wrong types",
    probes: async (k) => {
      const token = await k.sa(CP_AUDIENCE);
      return [
        cpProbe(
          `{"__proto__":{"isAdmin":true},"serviceAccountToken":"${token}"}`,
          unsupported(400, "invalid_request", "malformed request"),
        ),
        cpProbe(
          `${"[".repeat(20_000)}"constructor"${"]".repeat(20_000)}`,
          unsupported(400, "invalid_request", "the body must be a CredentialProviderRequest JSON object"),
        ),
        cpProbe(
          { ...cpRequest(token), serviceAccountToken: 42 },
          unsupported(400, "invalid_request", '"serviceAccountToken" must be a string'),
        ),
      ];
    },
  },
  {
    name: "credential provider: image references with control characters or upper case",
    probes: async (k) => [
      cpProbe(
        cpRequest(await k.sa(CP_AUDIENCE), `${REGISTRY_HOST}/team-a/app\u0007:v1`),
        unsupported(
          400,
          "invalid_request",
          `image "${REGISTRY_HOST}/team-a/app?:v1" is not a valid image reference: no scheme, spaces or control characters allowed`,
        ),
      ),
      cpProbe(
        cpRequest(await k.sa(CP_AUDIENCE), `${REGISTRY_HOST}/Team-A/app:v1`),
        unsupported(
          400,
          "invalid_request",
          `image "${REGISTRY_HOST}/Team-A/app:v1" is not a valid image reference: the repository path must be lower-case components separated by '/'`,
        ),
      ),
    ],
  },
  {
    name: "unknown grant types (with control characters echoed safely)",
    probes: async () => [
      postProbe(
        [
          ["grant_type", "client_credentials"],
          ["service", SERVICE],
        ],
        oauth(400, "unsupported_grant_type", 'grant_type "client_credentials" is not supported'),
      ),
      postProbe(
        [
          ["grant_type", "pass\u0000word\r\n\u00e9"],
          ["service", SERVICE],
        ],
        oauth(400, "unsupported_grant_type", 'grant_type "pass?word???" is not supported'),
      ),
    ],
  },
  {
    name: "RFC 8693 token exchange with an unsigned subject_token",
    probes: async (k) => [
      postProbe(
        [
          ["grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"],
          ["subject_token", k.secret(`${b64url({ alg: "none" })}.${b64url(await k.claims(SERVICE))}.`)],
          ["subject_token_type", "urn:ietf:params:oauth:token-type:jwt"],
          ["audience", SERVICE],
        ],
        oauth(
          400,
          "invalid_request",
          'subject_token is not acceptable: "alg" none is not allowed for this issuer',
        ),
      ),
    ],
  },
  {
    name: "refresh token of another service (other.test's, used at registry.test)",
    probes: async (k) => {
      const refresh = await k.refreshToken(OTHER_SERVICE);
      return [
        postProbe(
          [
            ["grant_type", "refresh_token"],
            ["service", SERVICE],
            ["scope", SCOPE],
            ["refresh_token", refresh],
          ],
          oauth(401, "invalid_grant", "refresh token was issued for another registry service"),
        ),
        ...getProbes(
          [["service", SERVICE]],
          basic(refresh),
          unauthorized(
            "malformed_credentials",
            "a refresh token is accepted only as refresh_token with grant_type=refresh_token",
          ),
          { explain: true },
        ),
      ];
    },
  },
  {
    name: "exchange credential of registry.test replayed at other.test",
    probes: async (k) => {
      const password = await k.exchangeCredential();
      const message = "exchange credential was issued for another registry service";
      return [
        ...getProbes(
          [["service", OTHER_SERVICE]],
          basic(password),
          unauthorized("invalid_audience", message),
          {
            explain: true,
          },
        ),
        postProbe(
          [
            ["grant_type", "password"],
            ["service", OTHER_SERVICE],
            ["password", password],
          ],
          oauth(401, "invalid_grant", message),
        ),
        // An exchange credential cannot buy another one either.
        cpProbe(
          cpRequest(password),
          unauthorized(
            "unknown_issuer",
            '"iss" claim "urn:registry-token-exchange:exchange-credential:registry-token-exchange" is not a trusted cluster issuer',
          ),
        ),
      ];
    },
  },
  {
    name: "a credential in an undecodable path (never echoed)",
    probes: async (k) => [
      {
        endpoint: "GET /token",
        request: { method: "GET", url: `/token/${await k.sa()}%` },
        expected: unsupported(400, "invalid_request", "malformed request URL"),
        unlisted: true,
      },
    ],
  },
];

/* ------------------------------------------------- the run ------------------------------------------------- */

interface Answered {
  row: string;
  probe: Probe;
  res: LightMyRequestResponse;
}

/** Everything that must never leave through an error body or a log line. */
const INTERNALS = /\n\s+at |node_modules|\/work\/|\bTypeError\b|\bRangeError\b|ECONN|FST_ERR|stack/;

describe("hostile input: one table, every endpoint it applies to", () => {
  const ledger = new SecretLedger();
  const answered: Answered[] = [];
  const { logger, lines } = capturingLogger("trace");
  let app: FastifyInstance;
  let issuerServer: Awaited<ReturnType<typeof startLocalIssuerServer>>;
  let kit: Kit;

  beforeAll(async () => {
    issuerServer = await startLocalIssuerServer();
    const oldKey = issuerServer.issuer.keys[0]!;
    issuerServer.issuer.rotate(); // two published keys before the app's first fetch
    const keys = await signingKeyFiles();
    const config = await testConfig(issuerServer.url, {
      clusters: [{ name: "test", issuer: issuerServer.url, audiences: [SERVICE, OTHER_SERVICE] }],
      registries: [
        {
          service: SERVICE,
          issuer: "registry-token-exchange",
          signingKey: keys,
          audiences: [SERVICE],
          // A registry with audiences is served through the credential provider only for its own.
          credentialProviderAudiences: [CP_AUDIENCE],
          hosts: [REGISTRY_HOST, SERVICE],
        },
        {
          service: OTHER_SERVICE,
          issuer: "registry-token-exchange",
          signingKey: keys,
          audiences: [OTHER_SERVICE],
          credentialProviderAudiences: [CP_AUDIENCE],
        },
      ],
      credentialProvider: { audiences: [CP_AUDIENCE] },
    });
    app = await buildApp(config, { logger, now: () => NOW });
    const issuer = issuerServer.issuer;
    let accounts = 0;
    const sa = (audience = SERVICE, req: Partial<LocalTokenRequest> = {}) =>
      issuer
        .mint({
          namespace: "team-a",
          serviceAccount: `builder-${++accounts}`,
          audiences: [audience],
          nowMs: NOW,
          ...req,
        })
        .then((t) => ledger.add(t));
    const fromResponse = (res: LightMyRequestResponse, field: string): string => {
      expect(res.statusCode, res.body).toBe(200);
      return ledger.add(res.json()[field] as string);
    };
    kit = {
      app,
      issuer,
      url: issuerServer.url,
      oldKey,
      secret: (s) => ledger.add(s),
      sa,
      claims: async (audience = SERVICE) => decodeJwt(await sa(audience)),
      signed: async (key, header, claims) =>
        ledger.add(await new SignJWT(claims).setProtectedHeader(header as JWTHeaderParameters).sign(key)),
      exchangeCredential: async () => {
        const res = await app.inject({
          method: "POST",
          url: "/v1/credential-provider",
          headers: { "content-type": "application/json" },
          payload: JSON.stringify(cpRequest(await sa(CP_AUDIENCE))),
        });
        expect(res.statusCode, res.body).toBe(200);
        return ledger.add(
          Object.values(res.json().auth as Record<string, { password: string }>)[0]!.password,
        );
      },
      refreshToken: async (service) =>
        fromResponse(
          await app.inject({
            method: "GET",
            url: `/token?service=${service}&offline_token=true`,
            headers: { authorization: basic(await sa(service)) },
          }),
          "refresh_token",
        ),
    };
  });
  afterAll(async () => {
    await app?.close();
    await issuerServer?.close();
  });

  it.each(ROWS.map((row) => [row.name, row] as const))("%s", async (_name, row) => {
    const probes = await row.probes(kit);
    expect(probes.length).toBeGreaterThan(0);
    for (const probe of probes) {
      const res = await app.inject(probe.request);
      answered.push({ row: row.name, probe, res });
      const where = `${row.name}: ${probe.endpoint}`;
      expect(res.statusCode, `${where}: ${res.body.slice(0, 300)}`).toBe(probe.expected.status);
      if (probe.expected.body !== undefined) expect(res.json(), where).toEqual(probe.expected.body);
      if (!probe.unlisted) {
        const [method, path] = probe.endpoint.split(" ") as [string, string];
        expectMatchesSpec(method, path, res);
      }
      if (res.statusCode === 401 && probe.endpoint.startsWith("GET")) {
        expect(res.headers["www-authenticate"], where).toBe(CHALLENGE);
      }
      if (res.statusCode >= 400) expect(res.headers["cache-control"], where).toBe("no-store");
      if (res.statusCode === 200) {
        // Minted tokens, refresh tokens and exchange credentials are secrets too, for the log check.
        const body = res.json() as Record<string, unknown>;
        for (const field of ["token", "access_token", "refresh_token"]) {
          if (typeof body[field] === "string") ledger.add(body[field] as string);
        }
        for (const a of Object.values((body.auth ?? {}) as Record<string, { password: string }>)) {
          ledger.add(a.password);
        }
      }
    }
  });

  it("covered GET, POST and the credential provider, and counted every row", () => {
    const endpoints = new Set(answered.map((a) => a.probe.endpoint));
    expect([...endpoints].sort()).toEqual([
      "GET /token",
      "GET /v1/explain",
      "POST /token",
      "POST /v1/credential-provider",
    ]);
    expect(new Set(answered.map((a) => a.row)).size).toBe(ROWS.length);
    expect(ROWS.length).toBeGreaterThanOrEqual(45);
    // A summary for the record: rows and probes run.
    console.info(`[hostile] ${ROWS.length} rows, ${answered.length} probes`);
  });

  it("answered no 5xx, and no error body leaks internals or echoes a piece of a credential", () => {
    expect(answered.length).toBeGreaterThan(100);
    for (const { row, probe, res } of answered) {
      const where = `${row}: ${probe.endpoint}`;
      expect(res.statusCode, where).toBeLessThan(500);
      if (res.statusCode < 400) continue;
      expect(res.body, where).not.toMatch(INTERNALS);
      const leak = ledger.findIn(res.body);
      expect(leak, `${where}: the error body echoes a piece of a secret`).toBeUndefined();
    }
  });

  it("logged every row, and no log line holds a 20-character piece of any secret", () => {
    expect(ledger.size).toBeGreaterThan(80);
    // The scanner itself finds a piece from the middle of a recorded token's signature.
    const probe = answered.find((a) => a.res.statusCode === 200)!;
    const sample = (probe.res.json().token ?? probe.res.json().access_token) as string | undefined;
    if (sample) expect(ledger.findIn(`...${sample.split(".")[2]!.slice(7, 30)}...`)).toBeDefined();
    const log = lines.join("");
    // The logger really captured the table (an empty log would pass vacuously): every request's access
    // line, rejections with their codes, and the audit records of issued tokens.
    expect(lines.length).toBeGreaterThanOrEqual(answered.length);
    expect(log).toContain('"msg":"request rejected"');
    expect(log).toContain('"msg":"credential denied"');
    expect(log).toContain('"msg":"token issued"');
    expect(log).not.toMatch(/\n\s+at .*\(/);
    const leak = ledger.findIn(log);
    expect(leak, leak && `a log line holds ${leak.piece} of secret #${leak.secret}`).toBeUndefined();
  });
});
