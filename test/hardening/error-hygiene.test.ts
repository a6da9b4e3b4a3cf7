/**
 * What a stranger learns from a refused credential (issue 12 §5): the `reason` code and a message about
 * the credential it sent, never the configuration: no trusted issuer, cluster name, algorithm list,
 * accepted audience or other served registry. The detail an operator needs stays on the access line
 * (`detail`), for every refusal below, on GET and POST /token.
 */
import { createSign, generateKeyPairSync, type KeyObject } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { basic, capturingLogger, signingKeyFiles, testConfig } from "../helpers/fixtures.js";

const CLUSTER = "prod-eu-hidden";
const AUDIENCE = "aud-hidden.example";
const SERVICE = "registry.example";
const OTHER_SERVICE = "hidden-registry.example";

let issuerUrl: string;
let issuer: LocalIssuer;
let app: FastifyInstance;
let lines: string[];
let closeIssuer: () => Promise<void>;

beforeAll(async () => {
  const server = await startLocalIssuerServer();
  ({ issuer, url: issuerUrl } = server);
  closeIssuer = () => server.close();
  const keys = await signingKeyFiles();
  const config = await testConfig(issuerUrl, {
    clusters: [{ name: CLUSTER, issuer: issuerUrl, audiences: [AUDIENCE], algorithms: ["RS256"] }],
    registries: [
      { service: SERVICE, issuer: "rte", signingKey: keys },
      { service: OTHER_SERVICE, issuer: "rte", signingKey: keys },
    ],
  });
  const captured = capturingLogger("info");
  lines = captured.lines;
  app = await buildApp(config, { logger: captured.logger });
});

afterAll(async () => {
  await app?.close();
  await closeIssuer?.();
});

/** `token` with its header replaced by `header` (signature kept: the header check comes first). */
function withHeader(token: string, header: Record<string, unknown>): string {
  const [, payload, signature] = token.split(".");
  return `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${payload}.${signature}`;
}

/** A token of the trusted issuer with its `iss` changed (re-signed by a key nobody trusts). */
function withIssuer(token: string, iss: string): string {
  const [header, payload] = token.split(".");
  const claims = { ...JSON.parse(Buffer.from(payload!, "base64url").toString("utf8")), iss };
  const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
  return `${input}.${createSign("sha256").update(input).sign(strangerKey(), "base64url")}`;
}

let stranger: KeyObject | undefined;
function strangerKey(): KeyObject {
  stranger ??= generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
  return stranger;
}

const mint = (audiences = [AUDIENCE]) => issuer.mint({ namespace: "team-a", serviceAccount: "x", audiences });

/** Every string of the configuration a stranger must not learn from an error body. */
const SECRET_CONFIG = () => [issuerUrl, CLUSTER, AUDIENCE, OTHER_SERVICE, "RS256"];

type Case = [
  name: string,
  credential: () => Promise<string>,
  service: string,
  reason: string,
  detail: RegExp,
];

describe("error bodies name nothing of the configuration; the access line keeps the detail", () => {
  it.each<Case>([
    [
      "an algorithm the issuer does not use",
      async () => withHeader(await mint(), { alg: "ES256", kid: "k" }),
      SERVICE,
      "unsupported_algorithm",
      new RegExp(`cluster "${CLUSTER}" allows RS256`),
    ],
    [
      "an unknown kid",
      async () => withHeader(await mint(), { alg: "RS256", kid: "nobody" }),
      SERVICE,
      "unknown_key",
      new RegExp(`cluster "${CLUSTER}"`),
    ],
    [
      "a bad signature",
      async () => `${(await mint()).slice(0, -8)}AAAAAAAA`,
      SERVICE,
      "invalid_signature",
      new RegExp(`cluster "${CLUSTER}"`),
    ],
    [
      "another audience",
      () => mint(["someone-else"]),
      SERVICE,
      "invalid_audience",
      new RegExp(`accepted: ${AUDIENCE}`),
    ],
    [
      "the trusted issuer with a trailing slash",
      async () => withIssuer(await mint(), `${issuerUrl}/`),
      SERVICE,
      "invalid_issuer",
      new RegExp(`trusted issuer "http://127\\.0\\.0\\.1:\\d+" \\(cluster "${CLUSTER}"\\)`),
    ],
    [
      "a service this realm does not serve",
      () => mint(),
      "unknown.example",
      "unknown_service",
      new RegExp(`served: "${SERVICE}", "${OTHER_SERVICE}"`),
    ],
  ])("%s", async (_name, credential, service, reason, detail) => {
    const token = await credential();
    const before = lines.length;
    const get = await app.inject({
      method: "GET",
      url: `/token?service=${service}`,
      headers: { authorization: basic(token) },
    });
    const post = await app.inject({
      method: "POST",
      url: "/token",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({ grant_type: "password", service, password: token }).toString(),
    });
    expect(get.json().errors[0].detail.reason).toBe(reason);
    for (const body of [get.body, post.body]) {
      for (const s of SECRET_CONFIG()) expect(body).not.toContain(s);
    }
    const access = lines.slice(before).filter((l) => l.includes('"path":"/token"'));
    expect(access).toHaveLength(2);
    for (const line of access) expect(JSON.parse(line).detail.detail).toMatch(detail);
  });
});

it("RFC 8693 token exchange for an unknown audience: invalid_target naming no served registry, detail logged", async () => {
  const before = lines.length;
  const res = await app.inject({
    method: "POST",
    url: "/token",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: await mint(),
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      audience: "unknown.example",
    }).toString(),
  });
  expect(res.json()).toEqual({
    error: "invalid_target",
    error_description: 'unknown service "unknown.example": not served here',
  });
  const access = lines.slice(before).map((l) => JSON.parse(l) as { detail?: { detail?: string } });
  expect(access.map((l) => l.detail?.detail)).toEqual([`served: "${SERVICE}", "${OTHER_SERVICE}"`]);
});
