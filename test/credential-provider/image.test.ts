/**
 * Image references as kubelet passes them, the `auth` key matching kubelet applies to them, and the Go
 * duration strings kubelet parses (`time.ParseDuration`).
 */
import { describe, expect, it } from "vitest";
import { parseImageReference } from "../../src/policy/image.js";
import {
  cacheSeconds,
  goDuration,
  parseCredentialProviderRequest,
} from "../../src/realm/credential-provider.js";
import { kubeletKeyMatches } from "../helpers/credential-provider.js";

const DIGEST = `sha256:${"0123456789abcdef".repeat(4)}`;

describe("parseImageReference", () => {
  it.each([
    ["registry.example.com/team-a/app:v1", "registry.example.com", "team-a/app", "v1", undefined],
    ["registry.example.com:5000/team-a/app", "registry.example.com:5000", "team-a/app", undefined, undefined],
    [`127.0.0.1:5000/team-a/app@${DIGEST}`, "127.0.0.1:5000", "team-a/app", undefined, DIGEST],
    [`reg.example.com/a/b/c:1.2.3@${DIGEST}`, "reg.example.com", "a/b/c", "1.2.3", DIGEST],
    ["localhost/app", "localhost", "app", undefined, undefined],
    ["localhost:5000/app:latest", "localhost:5000", "app", "latest", undefined],
    ["[::1]:5000/team-a/app", "[::1]:5000", "team-a/app", undefined, undefined],
    ["Registry.Example.com/team-a/app", "Registry.Example.com", "team-a/app", undefined, undefined],
    ["nginx", "docker.io", "library/nginx", undefined, undefined],
    ["nginx:1.27", "docker.io", "library/nginx", "1.27", undefined],
    ["bitnami/redis:7", "docker.io", "bitnami/redis", "7", undefined],
    ["docker.io/nginx", "docker.io", "library/nginx", undefined, undefined],
    ["docker.io/library/nginx", "docker.io", "library/nginx", undefined, undefined],
    [
      "reg.example.com/my_app/sub__x/a-b--c.d",
      "reg.example.com",
      "my_app/sub__x/a-b--c.d",
      undefined,
      undefined,
    ],
  ])("%s", (image, host, repository, tag, digest) => {
    expect(parseImageReference(image)).toEqual({ host, repository, tag, digest });
  });

  it.each([
    ["", "it is empty"],
    ["https://reg.example.com/app", "no scheme, spaces or control characters allowed"],
    ["reg.example.com/app name", "no scheme, spaces or control characters allowed"],
    ["reg.example.com/App", "the repository path must be lower-case components separated by '/'"],
    ["reg.example.com/", "the repository path must be lower-case components separated by '/'"],
    ["reg.example.com//app", "the repository path must be lower-case components separated by '/'"],
    ["reg.example.com/app:", "the tag is not valid"],
    ["reg.example.com/app:.x", "the tag is not valid"],
    ["reg.example.com/app@sha256:short", "the digest is not algorithm:hex"],
    ["reg.example.com:99999/app", "the port is out of range"],
    ["-bad-.example.com/app", '"-bad-.example.com" is not a registry host[:port]'],
    [`reg.example.com/${"a".repeat(256)}`, "the repository path is longer than 255 characters"],
  ])("refuses %j (%s)", (image, why) => {
    expect(() => parseImageReference(image)).toThrow(
      expect.objectContaining({
        code: "invalid_request",
        statusCode: 400,
        message: expect.stringContaining(why),
      }),
    );
  });
});

describe("the auth key (the image's host[:port]) under kubelet's URLsMatch rules", () => {
  it.each([
    ["registry.example.com", "registry.example.com/team-a/app", true],
    ["registry.example.com:5000", "registry.example.com:5000/team-a/app", true],
    ["registry.example.com", "registry.example.com:5000/team-a/app", false], // the port must be equal
    ["registry.example.com:5000", "registry.example.com/team-a/app", false],
    ["*.example.com", "registry.example.com/app", true],
    ["*.example.com", "a.registry.example.com/app", false], // one label per '*'
    ["registry.example.com/team-a", "registry.example.com/team-a/app", true], // literal path prefix
    ["registry.example.com/team-b", "registry.example.com/team-a/app", false],
  ])("%s vs %s -> %s", (key, image, want) => {
    expect(kubeletKeyMatches(key, image)).toBe(want);
  });

  it("the key answered for every parsed image matches it", () => {
    for (const image of [
      "registry.example.com:5000/team-a/app:v1",
      `127.0.0.1:5000/x@${DIGEST}`,
      "[::1]:5000/a",
      "reg.example.com/a/b",
    ]) {
      const { host } = parseImageReference(image);
      expect(kubeletKeyMatches(host, image)).toBe(true);
    }
  });
});

describe("goDuration and cacheSeconds", () => {
  it.each([
    [0, "0s"],
    [1, "1s"],
    [59, "59s"],
    [60, "1m0s"],
    [61, "1m1s"],
    [1799, "29m59s"],
    [1800, "30m0s"],
    [3600, "1h0m0s"],
    [3661, "1h1m1s"],
    [86_400, "24h0m0s"],
    [-5, "0s"],
    [12.9, "12s"],
  ])("%d s -> %s (Go's time.Duration.String())", (s, want) => {
    expect(goDuration(s)).toBe(want);
  });

  it("caches about half the remaining lifetime and always leaves 60 s + 10 s for /token", () => {
    expect([3600, 600, 200, 130, 100, 71, 70, 30, 0].map(cacheSeconds)).toEqual([
      1800, 300, 100, 60, 30, 1, 0, 0, 0,
    ]);
    for (let r = 0; r <= 4000; r += 7) {
      const c = cacheSeconds(r);
      expect(c).toBeLessThanOrEqual(Math.floor(r / 2));
      if (c > 0) expect(r - c).toBeGreaterThanOrEqual(70);
    }
  });
});

describe("parseCredentialProviderRequest", () => {
  const base = {
    apiVersion: "credentialprovider.kubelet.k8s.io/v1",
    kind: "CredentialProviderRequest",
    image: "reg.example.com/a",
    serviceAccountToken: "t",
  };

  it("ignores unknown fields, sorts annotations, and drops an empty annotation map", () => {
    expect(
      parseCredentialProviderRequest({
        ...base,
        futureField: 1,
        serviceAccountAnnotations: { "b.io/x": "2", "a.io/y": "1" },
      }),
    ).toEqual({
      image: "reg.example.com/a",
      token: "t",
      annotations: { "a.io/y": "1", "b.io/x": "2" },
    });
    expect(
      Object.keys(
        parseCredentialProviderRequest({
          ...base,
          serviceAccountAnnotations: { "b.io/x": "2", "a.io/y": "1" },
        }).annotations!,
      ),
    ).toEqual(["a.io/y", "b.io/x"]);
    expect(
      parseCredentialProviderRequest({ ...base, serviceAccountAnnotations: {} }).annotations,
    ).toBeUndefined();
    expect(
      parseCredentialProviderRequest({ ...base, serviceAccountAnnotations: null }).annotations,
    ).toBeUndefined();
  });

  it("caps the number and size of annotations", () => {
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`example.com/k${i}`, "v"]));
    expect(() => parseCredentialProviderRequest({ ...base, serviceAccountAnnotations: many })).toThrow(
      "more than 32 serviceAccountAnnotations",
    );
    expect(() =>
      parseCredentialProviderRequest({
        ...base,
        serviceAccountAnnotations: { "example.com/k": "v".repeat(1025) },
      }),
    ).toThrow('serviceAccountAnnotations["example.com/k"] is longer than 1024 characters');
  });
});
