/**
 * The API server's own audience (src/config/schema.ts `apiServerAudiences`): kube-apiserver's
 * `--api-audiences` defaults to the service-account issuer, and clusters commonly set it to
 * `https://kubernetes.default.svc` or `https://kubernetes.default.svc.cluster.local`. Every workload's
 * default (projected) token carries it, so accepting it here would let any pod authenticate without asking
 * for a token, and a token sent here could be replayed to the API server. A config whose cluster,
 * registry, registry credential-provider or credential-provider audiences include such a value is refused
 * at load (so at start-up and on every reload) and by `check-config`, with the reason, unless the cluster
 * sets `allowApiServerAudience: true`.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkConfigCommand } from "../../src/cli/commands.js";
import { loadConfigFile, parseConfig } from "../../src/config/load.js";
import { apiServerAudiences } from "../../src/config/schema.js";
import { ConfigError } from "../../src/errors.js";
import { signingKeyFiles } from "../helpers/fixtures.js";

const ISSUER = "https://oidc.example.com/cluster-a";
const WHY =
  "a workload's default service-account token would be accepted here, and any token sent here could be replayed to the Kubernetes API server";

let keys: { keyFile: string; certFile: string };
let dir: string;
beforeAll(async () => {
  keys = await signingKeyFiles();
  dir = mkdtempSync(join(tmpdir(), "rte-apiaud-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function raw(
  cluster: Record<string, unknown> = {},
  registry: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
) {
  return {
    clusters: [{ name: "prod", issuer: ISSUER, audiences: ["registry.example.com"], ...cluster }],
    registries: [
      {
        service: "registry.example.com",
        issuer: "rte",
        signingKey: { keyFile: "k", certFile: "c" },
        ...registry,
      },
    ],
    policy: { rules: [{ name: "all pull", allow: [{ repository: "**", actions: ["pull"] }] }] },
    ...extra,
  };
}

function problems(config: unknown): string[] {
  try {
    parseConfig(config);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

const refused = (path: string, aud: string, allow = "clusters[0]") =>
  `${path}: "${aud}" is an audience the API server of cluster "prod" accepts: ${WHY}; use an audience of its own, or set ${allow}.allowApiServerAudience: true to accept this on purpose`;

describe("an audience the API server accepts", () => {
  it.each([
    ["https://kubernetes.default.svc"],
    ["https://kubernetes.default.svc.cluster.local"],
    ["https://kubernetes.default.svc/"],
    ["kubernetes.default.svc"],
    ["https://KUBERNETES.default.svc"],
    [ISSUER],
    [`${ISSUER}/`],
  ])("%s in clusters[].audiences is refused with the reason", (aud) => {
    expect(problems(raw({ audiences: ["registry.example.com", aud] }))).toEqual([
      refused("clusters[0].audiences[1]", aud),
    ]);
  });

  it("is refused in registries[].audiences, registries[].credentialProviderAudiences and credentialProvider.audiences", () => {
    expect(
      problems(
        raw(
          {},
          {
            audiences: ["https://kubernetes.default.svc.cluster.local"],
            credentialProviderAudiences: [ISSUER],
          },
          { credentialProvider: { audiences: ["https://kubernetes.default.svc"] } },
        ),
      ),
    ).toEqual([
      refused("registries[0].audiences[0]", "https://kubernetes.default.svc.cluster.local"),
      refused("registries[0].credentialProviderAudiences[0]", ISSUER),
      refused("credentialProvider.audiences[0]", "https://kubernetes.default.svc"),
    ]);
  });

  it("a registry audience needs the opt-in of every cluster whose API server accepts it", () => {
    const two = (optIn: boolean[]) => ({
      ...raw({}, { audiences: ["https://kubernetes.default.svc"] }),
      clusters: [
        { name: "prod", issuer: ISSUER, audiences: ["a"], allowApiServerAudience: optIn[0] },
        {
          name: "dev",
          issuer: "https://dev.example.com",
          audiences: ["a"],
          allowApiServerAudience: optIn[1],
        },
      ],
    });
    expect(problems(two([true, false]))).toEqual([
      `registries[0].audiences[0]: "https://kubernetes.default.svc" is an audience the API server of cluster "dev" accepts: ${WHY}; use an audience of its own, or set clusters[1].allowApiServerAudience: true to accept this on purpose`,
    ]);
    expect(problems(two([true, true]))).toEqual([]);
    // Another cluster's issuer is not this cluster's API audience.
    expect(
      problems({ ...two([false, false]), registries: raw({}, { audiences: [ISSUER] }).registries }),
    ).toEqual([
      `registries[0].audiences[0]: "${ISSUER}" is an audience the API server of cluster "prod" accepts: ${WHY}; use an audience of its own, or set clusters[0].allowApiServerAudience: true to accept this on purpose`,
    ]);
  });

  it("is accepted with allowApiServerAudience: true", () => {
    expect(
      problems(raw({ audiences: ["https://kubernetes.default.svc", ISSUER], allowApiServerAudience: true })),
    ).toEqual([]);
  });

  it("lists the API server's usual audiences", () => {
    expect(apiServerAudiences("https://Issuer.example.com/")).toEqual(
      expect.arrayContaining([
        "https://issuer.example.com",
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "kubernetes.default.svc",
      ]),
    );
  });

  it("refuses the config file at load and in check-config (exit 2), with the reason", async () => {
    const file = join(dir, "config.yaml");
    writeFileSync(
      file,
      `clusters:
  - { name: prod, issuer: "${ISSUER}", audiences: ["https://kubernetes.default.svc"] }
registries:
  - { service: registry.example.com, issuer: rte, signingKey: { keyFile: ${keys.keyFile}, certFile: ${keys.certFile} } }
policy:
  rules: [{ name: all pull, allow: [{ repository: "**", actions: [pull] }] }]
`,
    );
    const line = refused("clusters[0].audiences[0]", "https://kubernetes.default.svc");
    expect(() => loadConfigFile(file, {})).toThrow(ConfigError);
    try {
      loadConfigFile(file, {});
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([line]);
    }
    expect(await checkConfigCommand({ config: file })).toEqual({
      stdout: "",
      stderr: `config error: ${line}\n`,
      code: 2,
    });
  });
});
