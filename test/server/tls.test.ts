/**
 * HTTPS served directly (`server.tls`): a client that verifies the certificate against the CA reaches
 * every endpoint, including the token realm; a client without the CA is refused by its own verification.
 */
import { request as httpsRequest } from "node:https";
import pino from "pino";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLocalIssuerServer } from "../../src/local/issuer.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { AUDIENCE, basic, SERVICE, testConfig } from "../helpers/fixtures.js";
import { generateTestPki, type TestPki } from "./helpers.js";

describe("HTTPS listener", () => {
  let pki: TestPki;
  let server: RunningServer;
  let closeIssuer: () => Promise<void>;
  let mint: () => Promise<string>;
  beforeAll(async () => {
    pki = await generateTestPki();
    const issuer = await startLocalIssuerServer();
    closeIssuer = issuer.close;
    mint = () =>
      issuer.issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
    const config = await testConfig(issuer.url, {
      server: { host: "127.0.0.1", port: 0, tls: { certFile: pki.certFile, keyFile: pki.keyFile } },
    });
    server = await startServer(config, { logger: pino({ level: "silent" }) });
  });
  afterAll(async () => {
    await server?.close();
    await closeIssuer?.();
  });

  it("advertises an https URL", () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it("serves the token realm to a client that verifies the certificate (undici)", async () => {
    const dispatcher = new Agent({ connect: { ca: pki.caPem } });
    try {
      const health = await fetch(`${server.url}/healthz`, { dispatcher });
      expect(health.status).toBe(200);
      const res = await fetch(`${server.url}/token?service=${SERVICE}&scope=repository:team-a/app:pull`, {
        dispatcher,
        headers: { authorization: basic(await mint()) },
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { token: string }).token).toMatch(/^ey/);
    } finally {
      await dispatcher.close();
    }
  });

  it("serves node:https with the CA and presents the expected certificate", async () => {
    const { status, subjectAltName, authorized } = await new Promise<{
      status: number;
      subjectAltName: string;
      authorized: boolean;
    }>((resolve, reject) => {
      const req = httpsRequest(`${server.url}/readyz`, { ca: pki.caPem }, (res) => {
        const socket = res.socket as import("node:tls").TLSSocket;
        res.resume();
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            subjectAltName: socket.getPeerCertificate().subjectaltname ?? "",
            authorized: socket.authorized,
          }),
        );
      });
      req.on("error", reject);
      req.end();
    });
    expect(authorized).toBe(true);
    expect(subjectAltName).toContain("IP Address:127.0.0.1");
    expect([200, 503]).toContain(status);
  });

  it("is refused by a client that does not trust the CA", async () => {
    const dispatcher = new Agent();
    try {
      const err = await fetch(`${server.url}/healthz`, { dispatcher }).then(
        () => undefined,
        (e: Error & { cause?: { code?: string } }) => e,
      );
      expect(err).toBeDefined();
      expect(err!.cause?.code).toMatch(
        /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT/,
      );
    } finally {
      await dispatcher.close();
    }
  });

  it("does not answer plain HTTP on the TLS port", async () => {
    const port = new URL(server.url).port;
    const err = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.status,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
  });
});
