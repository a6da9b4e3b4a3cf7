/**
 * An app configured for one cluster whose API server is the stand-in (test/helpers/apiserver.ts), with the
 * real v1.36.2 tokens (test/fixtures/kubernetes-1.36/) and a movable frozen clock.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { buildApp } from "../../src/app.js";
import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import {
  K8S_FIXTURES,
  K8S_ISSUER,
  k8sFixture,
  k8sJson,
  type StandInApiServer,
  type StandInOptions,
  startStandInApiServer,
} from "./apiserver.js";
import { basic, capturingLogger, SERVICE, signingKeyFiles } from "./fixtures.js";

/** 2026-12-03T08:55:00Z: every fixture token (including kubelet's, iat 08:54:41Z) is valid. */
export const TR_NOW = 1_796_288_100_000;
/** The credential-provider audience kubelet requested in the captures. */
const TR_CP_AUDIENCE = "rte-provider";
/** The registry host of the kubelet capture. */
export const TR_REGISTRY_HOST = "127.0.0.1:15001";
/** The annotation the captured ServiceAccount carries. */
export const ROLE = "registry-token-exchange.example/role";

/** The fixture tokens. */
export const TOKENS = {
  /** aud registry.test, no bound object. */
  plain: k8sFixture("sa-token-registry-audience.jwt").trim(),
  /** aud registry.test, bound to pod team-a/builder-pod. */
  podBound: k8sFixture("sa-token-pod-bound.jwt").trim(),
  /** aud rte-provider, bound to pod team-a/vector-pod (the one of the captured TokenReviews). */
  credentialProvider: k8sFixture("sa-token-credential-provider-audience.jwt").trim(),
  /** aud other.audience. */
  otherAudience: k8sFixture("sa-token-other-audience.jwt").trim(),
  /** What kubelet sent (pod team-a/rte-pull). */
  kubelet: k8sJson<{ serviceAccountToken: string }>("kubelet-credential-provider-request.json")
    .serviceAccountToken,
};

/** The policy of these tests: team-a pulls its own repositories; publishers (by annotation) pull releases. */
const TR_RULES = [
  {
    name: "team-a pulls its repositories",
    match: { namespace: "team-a" },
    allow: [{ repository: "team-a/**", actions: ["pull"] }],
  },
  {
    name: "publishers pull releases",
    match: { namespace: "team-a", annotations: { [ROLE]: "publisher" } },
    allow: [{ repository: "releases/**", actions: ["pull"] }],
  },
];

/** A running app + stand-in API server. */
export interface ReviewEnv {
  api: StandInApiServer;
  app: FastifyInstance;
  config: Config;
  /** Log lines written so far. */
  lines: string[];
  /** The bearer token file the service sends to the API server. */
  bearerFile: string;
  /** Moves the frozen clock of the app and the API server. */
  advance: (ms: number) => void;
  close: () => Promise<void>;
}

/**
 * Starts the stand-in and an app with one cluster `kind` (`verification: both`, review cache 10 s,
 * API timeout 500 ms unless `cluster` overrides them) trusting the fixture JWKS.
 */
export async function reviewEnv(
  cluster: Record<string, unknown> = {},
  overrides: Record<string, unknown> = {},
  apiOptions: StandInOptions = {},
): Promise<ReviewEnv> {
  let clock = TR_NOW;
  const api = await startStandInApiServer(() => clock, apiOptions);
  const dir = mkdtempSync(join(tmpdir(), "rte-tr-"));
  const bearerFile = join(dir, "token");
  writeFileSync(bearerFile, "apiserver-bearer-1\n");
  const keys = await signingKeyFiles();
  // `cluster.apiServer` adds to the stand-in's URL and bearer token file (e.g. a caFile).
  const { apiServer, ...rest } = cluster as { apiServer?: Record<string, unknown> };
  const config = parseConfig({
    server: { host: "127.0.0.1", port: 0 },
    logging: { level: "info" },
    clusters: [
      {
        name: "kind",
        issuer: K8S_ISSUER,
        jwksFile: join(K8S_FIXTURES, "jwks.json"),
        audiences: [SERVICE],
        algorithms: ["RS256"],
        verification: "both",
        apiServer: { url: api.url, bearerTokenFile: bearerFile, ...apiServer },
        review: { cacheTtlSeconds: 10, timeoutMs: 500 },
        ...rest,
      },
    ],
    registries: [
      {
        service: SERVICE,
        issuer: "registry-token-exchange",
        tokenTtlSeconds: 300,
        signingKey: keys,
        hosts: [TR_REGISTRY_HOST],
      },
    ],
    credentialProvider: { audiences: [TR_CP_AUDIENCE] },
    policy: { rules: TR_RULES },
    ...overrides,
  });
  const { logger, lines } = capturingLogger("info");
  const app = await buildApp(config, { logger, now: () => clock });
  return {
    api,
    app,
    config,
    lines,
    bearerFile,
    advance: (ms) => {
      clock += ms;
    },
    close: async () => {
      await app.close();
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `GET /token` with `credential` as the Basic password. */
export function tokenGet(
  app: FastifyInstance,
  credential: string,
  scope = "repository:team-a/app:pull",
  extra = "",
) {
  return app.inject({
    method: "GET",
    url: `/token?service=${SERVICE}&scope=${encodeURIComponent(scope)}${extra}`,
    headers: { authorization: basic(credential) },
  });
}

/** `POST /v1/credential-provider` as kubelet sends it. */
export function credentialProvider(
  app: FastifyInstance,
  token: string,
  image = `${TR_REGISTRY_HOST}/team-a/app`,
  annotations?: Record<string, string>,
) {
  return app.inject({
    method: "POST",
    url: "/v1/credential-provider",
    headers: { "content-type": "application/json" },
    payload: JSON.stringify({
      apiVersion: "credentialprovider.kubelet.k8s.io/v1",
      kind: "CredentialProviderRequest",
      image,
      serviceAccountToken: token,
      ...(annotations ? { serviceAccountAnnotations: annotations } : {}),
    }),
  });
}

/** The pod uid a fixture token is bound to. */
export function podUidOf(token: string): string {
  const payload = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as {
    "kubernetes.io": { pod: { uid: string } };
  };
  return payload["kubernetes.io"].pod.uid;
}
