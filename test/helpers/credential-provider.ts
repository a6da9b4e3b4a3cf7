/**
 * Fixtures for the credential-provider and OAuth tests: a config with the `credentialProvider` section
 * and two registries (the test registry, reachable as image host `registry.test:5000`, and a second one
 * with the same issuer and signing key, so that only the `aud` binding keeps their credentials apart).
 */
import { SERVICE, signingKeyFiles } from "./fixtures.js";

/** The audience kubelet requests for the credential provider (never a registry audience). */
export const CP_AUDIENCE = "registry-token-exchange";
/** The image host of the test registry. */
export const REGISTRY_HOST = "registry.test:5000";
/** The second registry's service (also its image host, by default). */
export const OTHER_SERVICE = "other.test";
/** The kubelet API version. */
export const CP_API_VERSION = "credentialprovider.kubelet.k8s.io/v1";

/** Config overrides (for `testEnv`) enabling `/v1/credential-provider`. */
export async function credentialProviderOverrides(
  credentialProvider: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  const keys = await signingKeyFiles();
  return {
    registries: [
      {
        service: SERVICE,
        issuer: "registry-token-exchange",
        tokenTtlSeconds: 300,
        signingKey: keys,
        hosts: [REGISTRY_HOST, "registry.test"],
      },
      // Same issuer and key as the first: only the service (`aud`) tells their credentials apart.
      { service: OTHER_SERVICE, issuer: "registry-token-exchange", tokenTtlSeconds: 300, signingKey: keys },
    ],
    credentialProvider: { audiences: [CP_AUDIENCE], ...credentialProvider },
  };
}

/** A `CredentialProviderRequest` as kubelet writes it. */
export function cpRequest(
  token: string,
  image = `${REGISTRY_HOST}/team-a/app:v1`,
  annotations?: Record<string, string>,
): Record<string, unknown> {
  return {
    apiVersion: CP_API_VERSION,
    kind: "CredentialProviderRequest",
    image,
    serviceAccountToken: token,
    ...(annotations ? { serviceAccountAnnotations: annotations } : {}),
  };
}

/** A distribution-style error body. */
export function dockerError(code: string, reason: string, message: string) {
  return { errors: [{ code, message, detail: { reason } }] };
}

/** An RFC 6749 error body. */
export function oauthError(error: string, description: string) {
  return { error, error_description: description };
}

/**
 * kubelet's `auth` key matching (pkg/credentialprovider/keyring.go URLsMatch), ported for assertions:
 * same port, same number of host labels each matching as a glob (`*` within a label), key path a prefix.
 */
export function kubeletKeyMatches(key: string, image: string): boolean {
  const parse = (s: string) => {
    const slash = s.indexOf("/");
    const hostPort = slash < 0 ? s : s.slice(0, slash);
    const path = slash < 0 ? "" : s.slice(slash);
    const m = /^(.*?)(?::(\d+))?$/.exec(hostPort)!;
    return { labels: m[1]!.split("."), port: m[2] ?? "", path };
  };
  const k = parse(key);
  const t = parse(image);
  if (k.port !== t.port || k.labels.length !== t.labels.length || !t.path.startsWith(k.path)) return false;
  return k.labels.every((label, i) => {
    const re = new RegExp(`^${label.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^.]*")}$`);
    return re.test(t.labels[i]!);
  });
}

/** The claims of a LocalIssuer service-account token that the tests compare against. */
export interface SaClaims {
  sub: string;
  exp: number;
  jti: string;
  "kubernetes.io": {
    serviceaccount: { name: string; uid: string };
    pod?: { name: string; uid: string };
    node?: { name: string; uid: string };
  };
}
