/**
 * Shared test fixtures: a local Kubernetes-faithful issuer on a real port, generated signing keys, a
 * config built through the real schema, and an app built with a silent (or capturing) logger.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { type AppDeps, buildApp } from "../../src/app.js";
import { parseConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { generateSigningKeyFiles } from "../../src/jose/signing-key.js";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { createLogger } from "../../src/logging.js";
import { NOW } from "./clock.js";

/** The registry service used by most tests. */
export const SERVICE = "registry.test";
/** The audience tokens carry in most tests. */
export const AUDIENCE = "registry.test";

let cachedKeys: Promise<{ keyFile: string; certFile: string }> | undefined;

/** One generated signing key + certificate per test process. */
export function signingKeyFiles(): Promise<{ keyFile: string; certFile: string }> {
  if (!cachedKeys) {
    const dir = mkdtempSync(join(tmpdir(), "rte-keys-"));
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    cachedKeys = generateSigningKeyFiles(dir);
  }
  return cachedKeys;
}

/** A standard policy: team namespaces push their own repos; everyone pulls library/**. */
export const STANDARD_RULES = [
  {
    name: "teams push to their own namespace",
    match: { cluster: "*", namespace: "team-*", serviceAccount: "*" },
    allow: [{ repository: "${namespace}/**", actions: ["pull", "push"] }],
  },
  {
    name: "everyone pulls library",
    allow: [{ repository: "library/**", actions: ["pull"] }],
  },
];

/** Builds a config through the real schema with sensible test defaults; `overrides` are merged shallowly. */
export async function testConfig(
  issuerUrl: string,
  overrides: Record<string, unknown> = {},
): Promise<Config> {
  const keys = await signingKeyFiles();
  return parseConfig({
    server: { host: "127.0.0.1", port: 0 },
    logging: { level: "silent" },
    clusters: [{ name: "test", issuer: issuerUrl, audiences: [AUDIENCE] }],
    registries: [
      { service: SERVICE, issuer: "registry-token-exchange", tokenTtlSeconds: 300, signingKey: keys },
    ],
    policy: { rules: STANDARD_RULES },
    ...overrides,
  });
}

/** A logger whose lines are collected in `lines` (for secret-leak assertions). */
export function capturingLogger(level = "debug"): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { logger: createLogger(level, stream), lines };
}

/** A running issuer + an app (not listening) wired to it. */
export interface TestEnv {
  issuer: LocalIssuer;
  issuerUrl: string;
  app: FastifyInstance;
  config: Config;
  close: () => Promise<void>;
}

/** Starts an issuer and builds an app against it. */
export async function testEnv(overrides: Record<string, unknown> = {}, deps: AppDeps = {}): Promise<TestEnv> {
  const server = await startLocalIssuerServer();
  const config = await testConfig(server.url, overrides);
  const app = await buildApp(config, { logger: pino({ level: "silent" }), ...deps });
  return {
    issuer: server.issuer,
    issuerUrl: server.url,
    app,
    config,
    close: async () => {
      await app.close();
      await server.close();
    },
  };
}

/** `Authorization: Basic` for a token as the password. */
export function basic(token: string, username = "x"): string {
  return `Basic ${Buffer.from(`${username}:${token}`).toString("base64")}`;
}

/**
 * A maker of service-account tokens (namespace `team-a`, audience {@link AUDIENCE}, issued at the frozen
 * `NOW`). Each call gets its own service account, `<prefix>-<n>`, unless one is given: the realm reuses
 * registry tokens per service account and granted access, and tests assert freshly minted claims.
 */
export function saTokenMaker(
  prefix: string,
): (env: TestEnv, req?: Partial<Parameters<TestEnv["issuer"]["mint"]>[0]>) => Promise<string> {
  let accounts = 0;
  return (env, req = {}) => {
    accounts += 1;
    return env.issuer.mint({
      namespace: "team-a",
      serviceAccount: `${prefix}-${accounts}`,
      audiences: [AUDIENCE],
      nowMs: NOW,
      ...req,
    });
  };
}

/**
 * The form body of a `grant_type=refresh_token` POST to `/token` (distribution docs/spec/auth/oauth.md) for
 * {@link SERVICE}, with `client_id=test`.
 * @param scope space-separated scopes; none asks for a login token
 */
export function refreshGrantBody(refreshToken: string, scope?: string): string {
  return new URLSearchParams({
    grant_type: "refresh_token",
    refresh_token: refreshToken,
    service: SERVICE,
    client_id: "test",
    ...(scope === undefined ? {} : { scope }),
  }).toString();
}
