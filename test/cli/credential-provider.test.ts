/**
 * The two kubelet credential provider plugins, run as kubelet runs them (a child process, the request on
 * stdin) against a live instance: `registry-token-exchange credential-provider` (Node, through tsx) and
 * `deploy/kubelet/registry-token-exchange-credential-provider.sh` (POSIX sh + curl, run with `sh`). Same
 * contract for both: the response on stdout and exit 0; one line on stderr and a non-zero exit on any
 * failure; transient failures (connection refused, 429, 5xx) retried within the deadline; `--ca-file`.
 * A small front server in between injects the failures.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCredentialProvider } from "../../src/cli/credential-provider.js";
import { freePort } from "../e2e/helpers/process.js";
import { CP_API_VERSION, cpRequest } from "../helpers/credential-provider.js";
import {
  type LiveExchange,
  localhostCertificate,
  type PluginKind,
  type PluginRun,
  runPlugin,
  startLiveExchange,
} from "../helpers/plugin.js";
import { generateTestPki, type TestPki } from "../server/helpers.js";

const HOST = "registry.test:5000";

/** A canned answer of the front server; `proxy` forwards to the live service. */
type Step = "proxy" | { status: number; headers?: Record<string, string>; body?: unknown };

interface Front {
  url: string;
  requests: () => number;
  close: () => Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** An HTTP server that answers `plan` in order, then forwards everything to `target`. */
async function startFront(target: string, plan: Step[], port = 0): Promise<Front> {
  let n = 0;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const body = await readBody(req);
      const step = plan[n++] ?? "proxy";
      if (step === "proxy") {
        const upstream = await fetch(`${target}${req.url}`, {
          method: req.method,
          headers: { "content-type": String(req.headers["content-type"] ?? "") },
          body,
        });
        res.writeHead(upstream.status, {
          "content-type": upstream.headers.get("content-type") ?? "application/json",
        });
        res.end(Buffer.from(await upstream.arrayBuffer()));
        return;
      }
      res.writeHead(step.status, { "content-type": "application/json", ...step.headers });
      res.end(
        JSON.stringify(
          step.body ?? {
            errors: [{ code: "UNAVAILABLE", message: "try later", detail: { reason: "keys_unavailable" } }],
          },
        ),
      );
    })();
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const address = server.address();
  const actual = typeof address === "object" && address ? address.port : port;
  return {
    url: `http://127.0.0.1:${actual}`,
    requests: () => n,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function expectOneLine(run: PluginRun, pattern: RegExp) {
  expect(run.stdout).toBe("");
  expect(run.stderr.endsWith("\n")).toBe(true);
  expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(run.stderr).toMatch(pattern);
}

function expectResponse(run: PluginRun, token: string) {
  expect(run.code, `stderr: ${run.stderr}`).toBe(0);
  expect(run.stderr).toBe("");
  const response = JSON.parse(run.stdout);
  expect(Object.keys(response)).toEqual(["apiVersion", "kind", "cacheKeyType", "cacheDuration", "auth"]);
  expect(response).toMatchObject({
    apiVersion: CP_API_VERSION,
    kind: "CredentialProviderResponse",
    cacheKeyType: "Registry",
    cacheDuration: expect.stringMatching(/^\d+m\d+s$/),
  });
  expect(Object.keys(response.auth)).toEqual([HOST]);
  expect(response.auth[HOST].username).toBe("registry-token-exchange");
  expect(response.auth[HOST].password).not.toBe(token);
  expect(decodeProtectedHeader(response.auth[HOST].password).typ).toBe("rte-exchange+jwt");
}

let live: LiveExchange;
let tls: LiveExchange;
let caSigned: LiveExchange;
let caFile: string;
let pki: TestPki;

beforeAll(async () => {
  const cert = await localhostCertificate();
  caFile = cert.certFile;
  pki = await generateTestPki();
  [live, tls, caSigned] = await Promise.all([
    startLiveExchange([HOST]),
    startLiveExchange([HOST], { tls: cert }),
    startLiveExchange([HOST], { tls: { certFile: pki.certFile, keyFile: pki.keyFile } }),
  ]);
});

afterAll(async () => {
  await Promise.all([live?.close(), tls?.close(), caSigned?.close()]);
});

describe.each(["node", "sh"] as PluginKind[])("the %s plugin", (kind) => {
  it("prints the CredentialProviderResponse for a pod's request and exits 0", async () => {
    const token = await live.podToken("team-a");
    const run = await runPlugin(kind, ["--url", live.url], JSON.stringify(cpRequest(token)));
    expectResponse(run, token);
  }, 60_000);

  it("fails at once (no retry) with one line on a permanent error: 403 outside the policy", async () => {
    const token = await live.podToken("team-a");
    const front = await startFront(live.url, []);
    try {
      const run = await runPlugin(
        kind,
        ["--url", front.url],
        JSON.stringify(cpRequest(token, `${HOST}/team-b/app`)),
      );
      expect(run.code).toBe(1);
      expectOneLine(run, /HTTP 403.*may not pull "team-b\/app" from "registry\.test" \(access_denied\)/);
      expect(run.stderr).not.toContain(token);
      expect(front.requests()).toBe(1);
    } finally {
      await front.close();
    }
  }, 60_000);

  it("fails with one line on a 400 (wrong apiVersion)", async () => {
    const token = await live.podToken("team-a");
    const request = { ...cpRequest(token), apiVersion: "credentialprovider.kubelet.k8s.io/v1beta1" };
    const run = await runPlugin(kind, ["--url", live.url], JSON.stringify(request));
    expect(run.code).toBe(1);
    expectOneLine(
      run,
      /HTTP 400.*apiVersion credentialprovider\.kubelet\.k8s\.io\/v1beta1 is not supported.*\(invalid_request\)/,
    );
  }, 60_000);

  it("retries 503 twice, then succeeds", async () => {
    const token = await live.podToken("team-a");
    const front = await startFront(live.url, [{ status: 503 }, { status: 503 }]);
    try {
      const run = await runPlugin(kind, ["--url", front.url], JSON.stringify(cpRequest(token)));
      expectResponse(run, token);
      expect(front.requests()).toBe(3);
    } finally {
      await front.close();
    }
  }, 60_000);

  it("retries a 429, waiting its Retry-After", async () => {
    const token = await live.podToken("team-a");
    const front = await startFront(live.url, [
      {
        status: 429,
        headers: { "retry-after": "2" },
        body: {
          errors: [
            {
              code: "TOOMANYREQUESTS",
              message: "too many requests: retry in 2 s",
              detail: { reason: "rate_limited" },
            },
          ],
        },
      },
    ]);
    try {
      const started = Date.now();
      const run = await runPlugin(kind, ["--url", front.url], JSON.stringify(cpRequest(token)));
      expectResponse(run, token);
      expect(front.requests()).toBe(2);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    } finally {
      await front.close();
    }
  }, 60_000);

  it("retries while the connection is refused, and succeeds once the service is up", async () => {
    const token = await live.podToken("team-a");
    const port = await freePort();
    const running = runPlugin(kind, ["--url", `http://127.0.0.1:${port}`], JSON.stringify(cpRequest(token)));
    await new Promise((r) => setTimeout(r, 2500));
    const front = await startFront(live.url, [], port);
    try {
      const run = await running;
      expectResponse(run, token);
      expect(front.requests()).toBe(1);
    } finally {
      await front.close();
    }
  }, 60_000);

  it("gives up at the --timeout deadline with one line", async () => {
    const token = await live.podToken("team-a");
    const port = await freePort();
    const run = await runPlugin(
      kind,
      ["--url", `http://127.0.0.1:${port}`, "--timeout", "3"],
      JSON.stringify(cpRequest(token)),
    );
    expect(run.code).toBe(1);
    expectOneLine(run, /gave up after \d+ attempts?.*(ECONNREFUSED|curl exit 7)/);
    expect(run.ms).toBeLessThan(8000);
  }, 60_000);

  it("trusts the service's certificate with --ca-file, and fails at once without it", async () => {
    const token = await tls.podToken("team-a");
    const ok = await runPlugin(
      kind,
      ["--url", tls.url, "--ca-file", caFile],
      JSON.stringify(cpRequest(token)),
    );
    expectResponse(ok, token);
    const untrusted = await runPlugin(
      kind,
      ["--url", tls.url, "--timeout", "20"],
      JSON.stringify(cpRequest(token)),
    );
    expect(untrusted.code).toBe(1);
    // Both plugins print this very line: the failure and the option that fixes it.
    expect(untrusted.stderr).toBe(
      `registry-token-exchange-credential-provider: ${tls.url}/v1/credential-provider: TLS: the service's certificate is self-signed and not trusted: set --ca-file to that certificate (or to the CA that signed it)\n`,
    );
    expect(untrusted.stdout).toBe("");
    expect(untrusted.ms).toBeLessThan(10_000);
  }, 60_000);

  it("reads at most 1 MiB of stdin: a larger one fails with one line, contacting nothing", async () => {
    const front = await startFront(live.url, []);
    try {
      const body = JSON.stringify(cpRequest("x"));
      // A request padded with spaces (valid JSON) to one byte over 1 MiB.
      const big = body + " ".repeat(1024 * 1024 + 1 - body.length);
      const run = await runPlugin(kind, ["--url", front.url, "--timeout", "5"], big);
      expect(run.code).toBe(1);
      expectOneLine(run, /stdin is larger than 1048576 bytes/);
      expect(front.requests()).toBe(0);
    } finally {
      await front.close();
    }
  }, 60_000);

  it("reads --timeout and --attempt-timeout as decimal: 08 and 09 are 8 and 9 seconds", async () => {
    const token = await live.podToken("team-a");
    const run = await runPlugin(
      kind,
      ["--url", live.url, "--timeout", "08", "--attempt-timeout", "09"],
      JSON.stringify(cpRequest(token)),
    );
    expectResponse(run, token);
  }, 60_000);

  it("a certificate from an untrusted CA: names --ca-file, fails at once; the CA in --ca-file fixes it", async () => {
    const token = await caSigned.podToken("team-a");
    const untrusted = await runPlugin(
      kind,
      ["--url", caSigned.url, "--timeout", "20"],
      JSON.stringify(cpRequest(token)),
    );
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toBe(
      `registry-token-exchange-credential-provider: ${caSigned.url}/v1/credential-provider: TLS: the service's certificate is signed by a CA that is not trusted: set --ca-file to that CA's certificate\n`,
    );
    expect(untrusted.ms).toBeLessThan(10_000);
    const ok = await runPlugin(
      kind,
      ["--url", caSigned.url, "--ca-file", pki.caFile],
      JSON.stringify(cpRequest(token)),
    );
    expectResponse(ok, token);
  }, 60_000);

  it("a token passed as an argument is never echoed in the usage error (exit 2)", async () => {
    const token = await live.podToken("team-a");
    for (const args of [
      ["--url", live.url, token],
      ["--url", live.url, `--password=${token}`],
    ]) {
      const run = await runPlugin(kind, args, JSON.stringify(cpRequest("x")));
      expect(run.code).toBe(2);
      for (const part of token.split(".")) expect(`${run.stdout}${run.stderr}`).not.toContain(part);
    }
  }, 60_000);

  it("refuses empty or non-request stdin (exit 1), and usage errors (exit 2)", async () => {
    const empty = await runPlugin(kind, ["--url", live.url], "");
    expect(empty.code).toBe(1);
    expectOneLine(empty, /stdin is empty/);
    const notRequest = await runPlugin(kind, ["--url", live.url], '{"kind":"Pod"}');
    expect(notRequest.code).toBe(1);
    expectOneLine(notRequest, /stdin is not a CredentialProviderRequest/);
    const noUrl = await runPlugin(kind, [], JSON.stringify(cpRequest("x")));
    expect(noUrl.code).toBe(2);
    expectOneLine(noUrl, /--url/);
    const badTimeout = await runPlugin(
      kind,
      ["--url", live.url, "--timeout", "0"],
      JSON.stringify(cpRequest("x")),
    );
    expect(badTimeout.code).toBe(2);
    expectOneLine(badTimeout, /--timeout/);
  }, 60_000);
});

describe("the node and sh plugins", () => {
  it("print the very same line for a refusal, error code included (kubelet's log reads the same whichever is installed)", async () => {
    const token = await live.podToken("team-a");
    const cases = [
      cpRequest(token, `${HOST}/team-b/app`),
      { ...cpRequest(token), apiVersion: "credentialprovider.kubelet.k8s.io/v1beta1" },
    ];
    for (const request of cases) {
      const [node, sh] = await Promise.all(
        (["node", "sh"] as PluginKind[]).map((kind) =>
          runPlugin(kind, ["--url", live.url], JSON.stringify(request)),
        ),
      );
      expect(node?.code).toBe(1);
      expect(sh?.code).toBe(1);
      expect(sh?.stderr).toBe(node?.stderr);
    }
    const denied = await runPlugin("sh", ["--url", live.url], JSON.stringify(cases[0]));
    expect(denied.stderr).toBe(
      `registry-token-exchange-credential-provider: ${live.url}/v1/credential-provider: HTTP 403 DENIED: service account team-a/puller of cluster "test" may not pull "team-b/app" from "registry.test" (access_denied)\n`,
    );
  }, 60_000);
});

describe("runCredentialProvider back-off (in process, fake clock)", () => {
  it("waits 1, 2, 4, 5 s... as the sh plugin does, honours Retry-After, and stops at the deadline", async () => {
    const front = await startFront(
      live.url,
      Array.from({ length: 50 }, () => ({ status: 503, headers: { "retry-after": "0" } })),
    );
    let clock = 0;
    const sleeps: number[] = [];
    try {
      await expect(
        runCredentialProvider(
          JSON.stringify(cpRequest("x")),
          { url: front.url, timeoutSeconds: 12, attemptTimeoutSeconds: 5 },
          {
            now: () => clock,
            sleep: async (ms) => {
              sleeps.push(ms);
              clock += ms;
            },
          },
        ),
      ).rejects.toThrow(
        /gave up after 4 attempt\(s\) in 7 s: HTTP 503 UNAVAILABLE: try later \(keys_unavailable\)/,
      );
      // 7 s slept; another 5 s would reach the 12 s deadline: stop after the 4th attempt (as the sh plugin).
      expect(sleeps).toEqual([1000, 2000, 4000]);
      expect(front.requests()).toBe(4);
    } finally {
      await front.close();
    }
  });

  it("a Retry-After longer than the back-off wins (capped at 10 s)", async () => {
    const front = await startFront(live.url, [
      { status: 429, headers: { "retry-after": "3" } },
      { status: 429, headers: { "retry-after": "60" } },
    ]);
    let clock = 0;
    const sleeps: number[] = [];
    try {
      const token = await live.podToken("team-a");
      const out = await runCredentialProvider(
        JSON.stringify(cpRequest(token)),
        { url: front.url, timeoutSeconds: 50, attemptTimeoutSeconds: 5 },
        {
          now: () => clock,
          sleep: async (ms) => {
            sleeps.push(ms);
            clock += ms;
          },
        },
      );
      expect(JSON.parse(out).kind).toBe("CredentialProviderResponse");
      expect(sleeps).toEqual([3000, 10_000]);
    } finally {
      await front.close();
    }
  });

  it("rejects a base URL with credentials or a query", async () => {
    for (const url of ["http://u:p@127.0.0.1:1", "http://127.0.0.1:1/?x=1", "ftp://127.0.0.1", "not a url"]) {
      await expect(
        runCredentialProvider(JSON.stringify(cpRequest("x")), {
          url,
          timeoutSeconds: 1,
          attemptTimeoutSeconds: 1,
        }),
      ).rejects.toThrow(/--url/);
    }
  });
});
