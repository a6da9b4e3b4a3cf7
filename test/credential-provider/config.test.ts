/**
 * The config keys of issue 4 through `parseConfig`: `credentialProvider` (audiences, credentialTtlSeconds)
 * and `registries[].hosts`, with their defaults and one exact dotted-path line per refused setting.
 */
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { configProblems } from "../helpers/errors.js";

type Raw = {
  clusters: Array<Record<string, unknown>>;
  registries: Array<Record<string, unknown>>;
  policy: { rules: unknown[] };
  credentialProvider?: unknown;
};

function minimal(): Raw {
  return {
    clusters: [{ name: "prod", issuer: "https://k8s.example.com", audiences: ["registry.example.com"] }],
    registries: [
      {
        service: "registry.example.com",
        issuer: "registry-token-exchange",
        signingKey: { keyFile: "key.pem", certFile: "cert.pem" },
      },
    ],
    policy: { rules: [{ name: "all pull", allow: [{ repository: "**", actions: ["pull"] }] }] },
  };
}

function problems(raw: unknown): string[] {
  return configProblems(() => parseConfig(raw));
}

describe("credentialProvider and registries[].hosts", () => {
  it("are absent by default (the endpoint is off; a registry's host is its service)", () => {
    const cfg = parseConfig(minimal());
    expect(cfg.credentialProvider).toBeUndefined();
    expect(cfg.registries[0]!.hosts).toBeUndefined();
  });

  it("credentialTtlSeconds defaults to 3600", () => {
    const raw = minimal();
    raw.credentialProvider = { audiences: ["registry-token-exchange"] };
    raw.registries[0]!.hosts = [
      "registry.example.com",
      "registry.example.com:5000",
      "10.0.0.1:5000",
      "[fd00::1]:5000",
    ];
    const cfg = parseConfig(raw);
    expect(cfg.credentialProvider).toEqual({
      audiences: ["registry-token-exchange"],
      credentialTtlSeconds: 3600,
    });
    expect(cfg.registries[0]!.hosts).toHaveLength(4);
  });

  it.each([
    {
      name: "no audiences",
      edit: (r: Raw) => (r.credentialProvider = { audiences: [] }),
      want: ["credentialProvider.audiences: must list at least one audience"],
    },
    {
      name: "missing audiences",
      edit: (r: Raw) => (r.credentialProvider = {}),
      want: ["credentialProvider.audiences: is required"],
    },
    {
      name: "an audience shared with a cluster (the registry path)",
      edit: (r: Raw) => (r.credentialProvider = { audiences: ["kubelet", "registry.example.com"] }),
      want: [
        'credentialProvider.audiences[1]: audience "registry.example.com" is also accepted at the registry (clusters[0].audiences): use a separate audience so a token kubelet requests for the credential provider cannot be presented at /token directly',
      ],
    },
    {
      name: "an audience shared with a registry",
      edit: (r: Raw) => {
        r.registries[0]!.audiences = ["pull-only"];
        r.credentialProvider = { audiences: ["pull-only"] };
      },
      want: [
        'credentialProvider.audiences[0]: audience "pull-only" is also accepted at the registry (registries[0].audiences): use a separate audience so a token kubelet requests for the credential provider cannot be presented at /token directly',
      ],
    },
    {
      name: "a TTL too short for kubelet's cache",
      edit: (r: Raw) => (r.credentialProvider = { audiences: ["k"], credentialTtlSeconds: 60 }),
      want: [
        "credentialProvider.credentialTtlSeconds: must be >= 120 (kubelet caches half of it; /token needs 60 s left)",
      ],
    },
    {
      name: "an unknown key",
      edit: (r: Raw) => (r.credentialProvider = { audiences: ["k"], audience: "k" }),
      // the key that was probably meant is suggested
      want: ['credentialProvider: unknown key "audience" (did you mean "audiences"?)'],
    },
    {
      name: "a host with a scheme",
      edit: (r: Raw) => (r.registries[0]!.hosts = ["https://registry.example.com"]),
      want: [
        "registries[0].hosts[0]: must be a lower-case registry host as in image references: host[:port], no scheme or path",
      ],
    },
    {
      name: "a host with a path",
      edit: (r: Raw) => (r.registries[0]!.hosts = ["registry.example.com/team-a"]),
      want: [
        "registries[0].hosts[0]: must be a lower-case registry host as in image references: host[:port], no scheme or path",
      ],
    },
    {
      name: "an upper-case host",
      edit: (r: Raw) => (r.registries[0]!.hosts = ["Registry.example.com"]),
      want: [
        "registries[0].hosts[0]: must be a lower-case registry host as in image references: host[:port], no scheme or path",
      ],
    },
    {
      name: "a host claimed by two registries",
      edit: (r: Raw) => {
        r.registries.push({
          ...r.registries[0],
          service: "mirror.example.com",
          hosts: ["shared.example.com"],
        });
        r.registries[0]!.hosts = ["shared.example.com"];
      },
      want: ['registries[1].hosts[0]: host "shared.example.com" is already listed by registries[0]'],
    },
    {
      name: "a service in the reserved URN namespace",
      edit: (r: Raw) => (r.registries[0]!.service = "urn:registry-token-exchange:exchange-credential:x"),
      want: [
        'registries[0].service: must not start with "urn:registry-token-exchange:" (reserved for credentials this service derives)',
      ],
    },
    {
      name: "an issuer in the reserved URN namespace",
      edit: (r: Raw) => (r.registries[0]!.issuer = "urn:registry-token-exchange:refresh-token:x"),
      want: [
        'registries[0].issuer: must not start with "urn:registry-token-exchange:" (reserved for credentials this service derives)',
      ],
    },
  ])("refuses $name", ({ edit, want }) => {
    const raw = minimal();
    edit(raw);
    expect(problems(raw)).toEqual(want);
  });
});
