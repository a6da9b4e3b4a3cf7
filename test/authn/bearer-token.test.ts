/**
 * `clusters[].bearerTokenFile` (src/authn/fetch.ts, src/authn/jwks.ts): the cluster's in-cluster token is
 * a credential for the API server the config names, so it goes only to that origin (scheme, host and
 * port of `discoveryUrl`, else `jwksUri`, else the issuer) and only on the first request of a fetch:
 * never to a discovery `jwks_uri` on another origin (allowed by `allowCrossHostJwksUri`), never after a
 * redirect, to the same origin or another. Real HTTP servers on real ports record every Authorization
 * header they receive.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { JsonFetcher } from "../../src/authn/fetch.js";
import { ClusterKeySet } from "../../src/authn/jwks.js";
import { parseConfig } from "../../src/config/load.js";
import { LocalIssuer } from "../../src/local/issuer.js";
import { AUDIENCE, signingKeyFiles } from "../helpers/fixtures.js";

const TOKEN = "in-cluster-bearer-token";

interface Recorder {
  url: string;
  origin: string;
  seen: Array<{ path: string; authorization: string | null }>;
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** A real HTTP server on 127.0.0.1 recording path and Authorization of every request. */
async function recorder(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Recorder> {
  const seen: Recorder["seen"] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    seen.push({ path: req.url ?? "", authorization: req.headers.authorization ?? null });
    handler(req, res);
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const url = `http://127.0.0.1:${port}`;
  return { url, origin: url, seen };
}

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
}

function tokenFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), "rte-bearer-")), "token");
  writeFileSync(file, `${TOKEN}\n`);
  return file;
}

function fetcher(origin: string): JsonFetcher {
  const f = new JsonFetcher({
    timeoutMs: 2000,
    maxBytes: 1 << 20,
    maxRedirects: 2,
    bearerTokenFile: tokenFile(),
    bearerTokenOrigin: origin,
  });
  cleanup.push(() => f.close());
  return f;
}

describe("JsonFetcher bearer token", () => {
  it("is sent on the first request to the configured origin", async () => {
    const api = await recorder((_req, res) => json(res, { ok: true }));
    await fetcher(api.origin).getJson(`${api.url}/.well-known/openid-configuration`);
    expect(api.seen).toEqual([
      { path: "/.well-known/openid-configuration", authorization: `Bearer ${TOKEN}` },
    ]);
  });

  it("is not sent after a redirect to the same origin", async () => {
    const api = await recorder((req, res) => {
      if (req.url === "/start") res.writeHead(302, { location: "/moved" }).end();
      else json(res, { ok: true });
    });
    const got = await fetcher(api.origin).getJson(`${api.url}/start`);
    expect(got.url).toBe(`${api.url}/moved`);
    expect(api.seen).toEqual([
      { path: "/start", authorization: `Bearer ${TOKEN}` },
      { path: "/moved", authorization: null },
    ]);
  });

  it("is not sent after a redirect to another origin, nor on a redirect back", async () => {
    let apiUrl = "";
    const other = await recorder((req, res) => {
      if (req.url === "/bounce") res.writeHead(307, { location: `${apiUrl}/back` }).end();
      else json(res, { ok: true });
    });
    const api = await recorder((req, res) => {
      if (req.url === "/start") res.writeHead(302, { location: `${other.url}/bounce` }).end();
      else json(res, { ok: true });
    });
    apiUrl = api.url;
    await fetcher(api.origin).getJson(`${api.url}/start`);
    expect(api.seen).toEqual([
      { path: "/start", authorization: `Bearer ${TOKEN}` },
      { path: "/back", authorization: null },
    ]);
    expect(other.seen).toEqual([{ path: "/bounce", authorization: null }]);
  });

  it("is never sent to a URL on another origin, nor without a configured origin", async () => {
    const api = await recorder((_req, res) => json(res, { ok: true }));
    await fetcher("http://127.0.0.1:1").getJson(`${api.url}/x`);
    const none = new JsonFetcher({
      timeoutMs: 2000,
      maxBytes: 1 << 20,
      maxRedirects: 0,
      bearerTokenFile: tokenFile(),
    });
    cleanup.push(() => none.close());
    await none.getJson(`${api.url}/y`);
    expect(api.seen).toEqual([
      { path: "/x", authorization: null },
      { path: "/y", authorization: null },
    ]);
  });
});

describe("cluster key set bearer token", () => {
  async function keySet(cluster: Record<string, unknown>) {
    const config = parseConfig({
      clusters: [{ name: "test", audiences: [AUDIENCE], bearerTokenFile: tokenFile(), ...cluster }],
      registries: [{ service: "registry.test", issuer: "rte", signingKey: await signingKeyFiles() }],
      policy: { rules: [], defaultDeny: true },
    });
    const ks = new ClusterKeySet(config.clusters[0]!, { logger: pino({ level: "silent" }) });
    cleanup.push(() => ks.close());
    return ks;
  }

  it("goes to discovery but not to a jwks_uri on another origin (allowCrossHostJwksUri)", async () => {
    const issuer = new LocalIssuer("http://placeholder");
    const keys = await recorder((_req, res) => json(res, issuer.jwks()));
    const api = await recorder((_req, res) =>
      json(res, { ...issuer.discovery(), jwks_uri: `${keys.url}/openid/v1/jwks` }),
    );
    issuer.issuer = api.url;
    const ks = await keySet({ issuer: api.url, allowCrossHostJwksUri: true });
    await ks.refresh();
    expect(ks.status()).toMatchObject({ ready: true, keys: 1 });
    expect(api.seen).toEqual([
      { path: "/.well-known/openid-configuration", authorization: `Bearer ${TOKEN}` },
    ]);
    expect(keys.seen).toEqual([{ path: "/openid/v1/jwks", authorization: null }]);
  });

  it("goes to a jwks_uri on the issuer's own origin, and to an explicitly configured jwksUri", async () => {
    const issuer = new LocalIssuer("http://placeholder");
    const api = await recorder((req, res) => {
      if (req.url === "/.well-known/openid-configuration") json(res, issuer.discovery());
      else json(res, issuer.jwks());
    });
    issuer.issuer = api.url;
    await (await keySet({ issuer: api.url })).refresh();
    const keys = await recorder((_req, res) => json(res, issuer.jwks()));
    await (await keySet({ issuer: api.url, jwksUri: `${keys.url}/openid/v1/jwks` })).refresh();
    expect(api.seen).toEqual([
      { path: "/.well-known/openid-configuration", authorization: `Bearer ${TOKEN}` },
      { path: "/openid/v1/jwks", authorization: `Bearer ${TOKEN}` },
    ]);
    expect(keys.seen).toEqual([{ path: "/openid/v1/jwks", authorization: `Bearer ${TOKEN}` }]);
  });
});
