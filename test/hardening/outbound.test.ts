/**
 * Outbound safety (src/authn/fetch.ts, src/authn/jwks.ts): the only requests this service makes are for a
 * cluster's OIDC discovery document and JWKS, and each runs against a hostile server here, a real HTTP(S)
 * server on a real port: one that accepts and never answers, one that never accepts (connect timeout),
 * one that drips bytes, oversized answers with and without a declared length, HTML, redirect chains and a
 * redirect from https to http, a discovery document naming another issuer, a `jwks_uri` on another host
 * (the SSRF guard), and a JWKS with unusable keys next to a good one.
 *
 * Every failure must reach the client as the generic 503 `keys_unavailable` (with `Retry-After`) and put
 * its reason in the log (`cluster key fetch failed`), never in the answer.
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LightMyRequestResponse } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../../src/app.js";
import { kubernetesKeyId } from "../../src/jose/kid.js";
import { LocalIssuer } from "../../src/local/issuer.js";
import { AUDIENCE, basic, capturingLogger, SERVICE, testConfig } from "../helpers/fixtures.js";
import { expectMatchesSpec } from "../helpers/openapi.js";
import { generateTestPki } from "../server/helpers.js";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A real HTTP(S) server on 127.0.0.1 whose every request is answered by `handler`. */
interface Served {
  url: string;
  /** Requests seen: path and Authorization header. */
  seen: Array<{ path: string; authorization: string | undefined }>;
  close: () => Promise<void>;
}

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function serve(handler: Handler, tls?: { certFile: string; keyFile: string }): Promise<Served> {
  const seen: Served["seen"] = [];
  const sockets = new Set<Socket>();
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    seen.push({ path: req.url ?? "", authorization: req.headers.authorization });
    handler(req, res);
  };
  const server = tls
    ? createHttpsServer(
        {
          cert: await import("node:fs").then((fs) => fs.readFileSync(tls.certFile)),
          key: await import("node:fs").then((fs) => fs.readFileSync(tls.keyFile)),
        },
        onRequest,
      )
    : createHttpServer(onRequest);
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("secureConnection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const served: Served = {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  cleanup.push(() => served.close());
  return served;
}

const json = (res: ServerResponse, body: unknown, type = "application/json") => {
  res.writeHead(200, { "content-type": type, "cache-control": "public, max-age=3600" });
  res.end(JSON.stringify(body));
};

/** An app trusting one cluster (`cluster` merged in) and a token of `issuer` for it. */
async function appFor(issuer: LocalIssuer, cluster: Record<string, unknown>) {
  const { logger, lines } = capturingLogger("debug");
  const config = await testConfig(issuer.issuer, {
    clusters: [
      { name: "test", issuer: issuer.issuer, audiences: [AUDIENCE], fetch: { timeoutMs: 800 }, ...cluster },
    ],
  });
  const app = await buildApp(config, { logger });
  cleanup.push(() => app.close());
  const token = () => issuer.mint({ namespace: "team-a", serviceAccount: "builder", audiences: [AUDIENCE] });
  const get = async (): Promise<LightMyRequestResponse> =>
    app.inject({
      method: "GET",
      url: `/token?service=${SERVICE}&scope=repository:team-a/app:pull`,
      headers: { authorization: basic(await token()) },
    });
  const logged = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { app, get, lines, logged };
}

/** The answer is the generic 503 and the log says why (`reason` matching `why`). */
function expectUnavailable(
  res: LightMyRequestResponse,
  logged: Array<Record<string, unknown>>,
  why: RegExp,
): void {
  expect(res.statusCode, res.body).toBe(503);
  expect(res.json()).toEqual({
    errors: [
      {
        code: "UNAVAILABLE",
        message: "the cluster's signing keys are not available right now",
        detail: { reason: "keys_unavailable" },
      },
    ],
  });
  expect(Number(res.headers["retry-after"])).toBeGreaterThanOrEqual(1);
  expectMatchesSpec("GET", "/token", res);
  const failure = logged.find((l) => l.msg === "cluster key fetch failed");
  expect(failure, JSON.stringify(logged.map((l) => l.msg))).toBeDefined();
  expect(failure!.level).toBe(40);
  expect(String(failure!.reason)).toMatch(why);
  // The reason is for the operator only.
  expect(res.body).not.toContain(String(failure!.reason).slice(0, 30));
}

/** A new issuer (keys, tokens) for a URL not yet known: set `issuer.issuer` once the server listens. */
const newIssuer = () => new LocalIssuer("http://placeholder.invalid");

/** A discovery + JWKS server that behaves like kube-apiserver unless `override` answers first. */
async function apiserver(
  issuer: LocalIssuer,
  override: (req: IncomingMessage, res: ServerResponse) => boolean = () => false,
) {
  const served = await serve((req, res) => {
    if (override(req, res)) return;
    if (req.url?.endsWith("/.well-known/openid-configuration")) return json(res, issuer.discovery());
    if (req.url?.endsWith("/openid/v1/jwks")) return json(res, issuer.jwks(), "application/jwk-set+json");
    res.writeHead(404).end();
  });
  issuer.issuer = served.url;
  return served;
}

describe("timeouts", () => {
  it("total: a server that accepts and never answers", async () => {
    const issuer = newIssuer();
    await apiserver(issuer, () => true); // never writes a response
    const { get, logged } = await appFor(issuer, {});
    const started = Date.now();
    const res = await get();
    expect(Date.now() - started).toBeLessThan(800 + 1500);
    expectUnavailable(res, logged(), /timeout|aborted/i);
  });

  it("total: a server that drips the body one byte at a time (each byte resets the idle timer)", async () => {
    const issuer = newIssuer();
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/.well-known/openid-configuration")) return false;
      res.writeHead(200, { "content-type": "application/json" });
      const body = JSON.stringify(issuer.discovery());
      let i = 0;
      const timer = setInterval(() => {
        if (res.destroyed || i >= body.length) return clearInterval(timer);
        res.write(body[i++]!);
      }, 50);
      res.on("close", () => clearInterval(timer));
      return true;
    });
    const { get, logged } = await appFor(issuer, {});
    const started = Date.now();
    const res = await get();
    expect(Date.now() - started).toBeLessThan(800 + 1500);
    expectUnavailable(res, logged(), /reading body failed: .*(timeout|abort)/i);
  });

  it("connect: a listener whose accept queue is full (the handshake never completes)", async () => {
    // A stopped process keeps its listening socket; once its (tiny) accept queue is full the kernel
    // drops further handshakes, so a connect hangs: only the connect timeout can end it.
    const child = spawn(
      process.execPath,
      [
        "-e",
        "require('net').createServer().listen({port:0,host:'127.0.0.1',backlog:1},function(){console.log(this.address().port)})",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    cleanup.push(() => {
      child.kill("SIGKILL");
    });
    const port = await new Promise<number>((resolve) =>
      child.stdout!.once("data", (d) => resolve(Number(String(d).trim()))),
    );
    child.kill("SIGSTOP");
    const fillers: Socket[] = [];
    for (let i = 0; i < 8; i++)
      fillers.push(createConnection({ host: "127.0.0.1", port }).on("error", () => {}));
    cleanup.push(() => {
      for (const s of fillers) s.destroy();
    });
    await new Promise((r) => setTimeout(r, 200));
    const issuer = newIssuer();
    issuer.issuer = `http://127.0.0.1:${port}`;
    const { get, logged } = await appFor(issuer, {});
    const started = Date.now();
    const res = await get();
    expect(Date.now() - started).toBeLessThan(800 + 1500);
    expectUnavailable(res, logged(), /timeout|aborted/i);
  });
});

describe("size cap", () => {
  it("refuses a declared Content-Length over fetch.maxBytes without reading the body", async () => {
    const issuer = newIssuer();
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/jwks")) return false;
      res.writeHead(200, { "content-type": "application/json", "content-length": String(5 * 1024 * 1024) });
      res.write("{");
      return true; // never finishes: only the declared length can end this quickly
    });
    const { get, logged } = await appFor(issuer, { fetch: { timeoutMs: 3000, maxBytes: 4096 } });
    const started = Date.now();
    const res = await get();
    expect(Date.now() - started).toBeLessThan(1500);
    expectUnavailable(res, logged(), /^response larger than 4096 bytes$/);
  });

  it("refuses an undeclared (chunked) body once it passes fetch.maxBytes", async () => {
    const issuer = newIssuer();
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/jwks")) return false;
      res.writeHead(200, { "content-type": "application/json" }); // chunked, no length
      const keys = issuer.jwks().keys;
      res.write('{"keys":[');
      for (let i = 0; i < 100; i++) res.write(`${JSON.stringify(keys[0])},`);
      res.end(`${JSON.stringify(keys[0])}]}`);
      return true;
    });
    const { get, logged } = await appFor(issuer, { fetch: { timeoutMs: 3000, maxBytes: 4096 } });
    expectUnavailable(await get(), logged(), /^response larger than 4096 bytes$/);
  });
});

describe("content type", () => {
  it.each([["text/html; charset=utf-8"], ["text/html; profile=json"], ["application/jsonp"]])(
    "refuses %s",
    async (type) => {
      const issuer = newIssuer();
      await apiserver(issuer, (req, res) => {
        if (!req.url?.endsWith("/.well-known/openid-configuration")) return false;
        json(res, issuer.discovery(), type);
        return true;
      });
      const { get, logged } = await appFor(issuer, {});
      expectUnavailable(
        await get(),
        logged(),
        new RegExp(`^unexpected content-type "${type.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"$`),
      );
    },
  );

  it("accepts application/json with parameters and application/jwk-set+json (what kube-apiserver sends)", async () => {
    const issuer = newIssuer();
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/.well-known/openid-configuration")) return false;
      json(res, issuer.discovery(), "Application/JSON; charset=utf-8");
      return true;
    });
    const { get } = await appFor(issuer, {});
    expect((await get()).statusCode).toBe(200);
  });
});

describe("redirects", () => {
  /** A chain of `hops` (>= 1) redirects on one server ending at the real discovery document. */
  async function chain(issuer: LocalIssuer, hops: number) {
    return apiserver(issuer, (req, res) => {
      const m = /\/hop\/(\d+)$/.exec(req.url ?? "");
      if (req.url?.endsWith("/.well-known/openid-configuration") && !req.url.includes("final")) {
        res
          .writeHead(302, { location: hops > 1 ? "/hop/1" : "/final/.well-known/openid-configuration" })
          .end();
        return true;
      }
      if (m) {
        const n = Number(m[1]);
        res
          .writeHead(302, {
            location: n < hops - 1 ? `/hop/${n + 1}` : "/final/.well-known/openid-configuration",
          })
          .end();
        return true;
      }
      return false;
    });
  }

  it("follows up to fetch.maxRedirects (2), and refuses a third", async () => {
    const ok = newIssuer();
    const okServer = await chain(ok, 2);
    expect((await (await appFor(ok, {})).get()).statusCode).toBe(200);
    expect(okServer.seen.map((s) => s.path).slice(0, 3)).toEqual([
      "/.well-known/openid-configuration",
      "/hop/1",
      "/final/.well-known/openid-configuration",
    ]);

    const tooMany = newIssuer();
    await chain(tooMany, 3);
    const { get, logged } = await appFor(tooMany, {});
    expectUnavailable(await get(), logged(), /^too many redirects \(> 2\)$/);
  });

  it("refuses a redirect from https to http", async () => {
    const pki = await generateTestPki();
    const plain = newIssuer();
    const http = await apiserver(plain);
    const issuer = newIssuer();
    const https = await serve((_req, res) => {
      res.writeHead(302, { location: `${http.url}/.well-known/openid-configuration` }).end();
    }, pki);
    issuer.issuer = https.url;
    const { get, logged } = await appFor(issuer, { caFile: pki.caFile });
    expectUnavailable(await get(), logged(), /^redirect from https to http refused$/);
    expect(http.seen).toEqual([]);
  });

  it("sends the bearer token only to the configured origin, never to where a redirect points", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rte-bearer-"));
    const bearerTokenFile = join(dir, "token");
    writeFileSync(bearerTokenFile, "in-cluster-bearer-token\n");
    const issuer = newIssuer();
    const elsewhere = await serve((_req, res) => json(res, issuer.jwks(), "application/jwk-set+json"));
    const origin = await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/openid/v1/jwks")) return false;
      res.writeHead(307, { location: `${elsewhere.url}/keys` }).end();
      return true;
    });
    const { get } = await appFor(issuer, { bearerTokenFile });
    expect((await get()).statusCode).toBe(200);
    expect(origin.seen.map((s) => s.authorization)).toEqual([
      "Bearer in-cluster-bearer-token",
      "Bearer in-cluster-bearer-token",
    ]);
    expect(elsewhere.seen).toEqual([{ path: "/keys", authorization: undefined }]);
  });
});

describe("discovery document", () => {
  it("refuses a discovery issuer that differs from the configured one (even by a trailing slash)", async () => {
    const issuer = newIssuer();
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/.well-known/openid-configuration")) return false;
      json(res, { ...issuer.discovery(), issuer: `${issuer.issuer}/` });
      return true;
    });
    const { get, logged } = await appFor(issuer, {});
    expectUnavailable(
      await get(),
      logged(),
      /^discovery issuer ".*\/" does not equal configured issuer ".*"$/,
    );
  });

  it("refuses a jwks_uri on another host unless allowCrossHostJwksUri (SSRF guard)", async () => {
    const issuer = newIssuer();
    const keys = await serve((_req, res) => json(res, issuer.jwks(), "application/jwk-set+json"));
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/.well-known/openid-configuration")) return false;
      json(res, { ...issuer.discovery(), jwks_uri: `${keys.url}/openid/v1/jwks` });
      return true;
    });
    const guarded = await appFor(issuer, {});
    expectUnavailable(
      await guarded.get(),
      guarded.logged(),
      /^jwks_uri host 127\.0\.0\.1:\d+ differs from discovery host/,
    );
    expect(keys.seen).toEqual([]);

    const allowed = await appFor(issuer, { allowCrossHostJwksUri: true });
    expect((await allowed.get()).statusCode).toBe(200);
    expect(keys.seen).toHaveLength(1);
  });

  it("judges the jwks_uri host against the configured discovery URL, not where a redirect led", async () => {
    const issuer = newIssuer();
    const elsewhere = await serve((req, res) => {
      if (req.url?.endsWith("/openid/v1/jwks")) return json(res, issuer.jwks(), "application/jwk-set+json");
      // A discovery document on the host the redirect led to, naming keys on that same host.
      json(res, { ...issuer.discovery(), jwks_uri: `http://${req.headers.host}/openid/v1/jwks` });
    });
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/.well-known/openid-configuration")) return false;
      res.writeHead(302, { location: `${elsewhere.url}/.well-known/openid-configuration` }).end();
      return true;
    });
    const { get, logged } = await appFor(issuer, {});
    expectUnavailable(await get(), logged(), /^jwks_uri host 127\.0\.0\.1:\d+ differs from discovery host/);
    expect(elsewhere.seen.map((s) => s.path)).toEqual(["/.well-known/openid-configuration"]);
  });

  it("refuses an http jwks_uri named by an https discovery document (no downgrade)", async () => {
    const pki = await generateTestPki();
    const issuer = newIssuer();
    // Plain-HTTP keys (anyone on the path could swap them), on a host the operator allowed.
    const plain = await serve((_req, res) => json(res, issuer.jwks(), "application/jwk-set+json"));
    const https = await serve((_req, res) => {
      json(res, { ...issuer.discovery(), jwks_uri: `${plain.url}/openid/v1/jwks` });
    }, pki);
    issuer.issuer = https.url;
    const { get, logged } = await appFor(issuer, { caFile: pki.caFile, allowCrossHostJwksUri: true });
    expectUnavailable(await get(), logged(), /^jwks_uri is http but discovery is https: downgrade refused$/);
    expect(plain.seen).toEqual([]);
  });
});

describe("unusable keys in a JWKS", () => {
  it("skips each with a warning; one good key among them still verifies", async () => {
    const issuer = newIssuer();
    const good = issuer.jwks().keys[0]!;
    const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const garbage: unknown[] = [
      null,
      "a string",
      { kty: "oct", k: "c2VjcmV0", kid: "hmac" },
      { ...good, kid: "bad-modulus", n: "not-base64url!!" },
      { ...(weak.export({ format: "jwk" }) as object), kid: "rsa-1024", use: "sig" },
      { ...(ec.privateKey.export({ format: "jwk" }) as object), kid: "private" },
      { ...good, kid: "encryption", use: "enc" },
      { ...good, kid: 42 },
      { kty: "EC", crv: "P-256", x: "AAAA", y: "AAAA", kid: "off-curve" },
      { kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", kid: "eddsa" },
    ];
    await apiserver(issuer, (req, res) => {
      if (!req.url?.endsWith("/openid/v1/jwks")) return false;
      json(res, { keys: [...garbage.slice(0, 5), good, ...garbage.slice(5)] }, "application/jwk-set+json");
      return true;
    });
    const { app, get, logged } = await appFor(issuer, {});
    const res = await get();
    expect(res.statusCode, res.body).toBe(200);
    const skipped = logged().filter((l) => l.msg === "JWKS key skipped");
    expect(skipped.map((l) => l.index)).toEqual([0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
    expect(skipped.every((l) => l.level === 40 && l.cluster === "test")).toBe(true);
    expect(skipped.map((l) => l.reason)).toEqual([
      "not an object",
      "not an object",
      'unsupported kty "oct"',
      "RSA key shorter than 2048 bits", // node decodes the mangled modulus into a few bytes
      "RSA key shorter than 2048 bits",
      "contains private key material",
      'use is "enc", not "sig"',
      "kid is not a string",
      expect.stringMatching(/^cannot import: /),
      'unsupported kty "OKP"',
    ]);
    expect(app.exchange.keySets[0]!.status()).toMatchObject({ ready: true, keys: 1 });
    expect(kubernetesKeyId(issuer.keys[0]!)).toBe(good.kid);
  });

  it("a JWKS with nothing usable, or no keys array, is keys_unavailable", async () => {
    for (const [doc, why] of [
      [{ keys: [{ kty: "oct", k: "c2VjcmV0" }] }, /^JWKS has no usable keys$/],
      [{ keys: "none" }, /^JWKS is not an object with a "keys" array$/],
      [[1, 2, 3], /^JWKS is not an object with a "keys" array$/],
    ] as const) {
      const issuer = newIssuer();
      await apiserver(issuer, (req, res) => {
        if (!req.url?.endsWith("/openid/v1/jwks")) return false;
        json(res, doc, "application/jwk-set+json");
        return true;
      });
      const { get, logged } = await appFor(issuer, {});
      expectUnavailable(await get(), logged(), why);
    }
  });
});
