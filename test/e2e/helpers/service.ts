/**
 * The service under test, for real: a local Kubernetes-faithful issuer on its own port and the token
 * exchange listening on 127.0.0.1 (via `startServer`, the code path the CLI uses), configured with the
 * shared test config (`testConfig()`: service `registry.test`, STANDARD_RULES policy).
 *
 * Its log is captured (level info: fastify's request lines and the audit line of every issued token)
 * so tests can assert which endpoint a client really called, e.g. that containerd used POST /token.
 */
import { Writable } from "node:stream";
import { type LocalIssuer, startLocalIssuerServer } from "../../../src/local/issuer.js";
import { createLogger } from "../../../src/logging.js";
import { startServer } from "../../../src/server.js";
import { AUDIENCE, testConfig } from "../../helpers/fixtures.js";

/** A request the service logged as completed. */
interface LoggedRequest {
  method: string;
  path: string;
  statusCode: number;
}

/** A running exchange service with its issuer. */
export interface ExchangeService {
  /** Base URL, e.g. `http://127.0.0.1:41234`; the realm is `${url}/token`. */
  url: string;
  issuer: LocalIssuer;
  /** Every log line, parsed. */
  lines: Array<Record<string, unknown>>;
  /** Completed requests, in order (from the one access line of each request). */
  requests: () => LoggedRequest[];
  /** The `audit` objects of issued tokens, in order. */
  audits: () => Array<Record<string, unknown>>;
  /** Mints a bound service-account token for `namespace`/`serviceAccount` with the test audience. */
  saToken: (namespace: string, serviceAccount?: string) => Promise<string>;
  close: () => Promise<void>;
}

/** Starts an issuer and the exchange service configured to trust it. */
export async function startExchange(): Promise<ExchangeService> {
  const issuerServer = await startLocalIssuerServer();
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n")) {
        if (line.trim() === "") continue;
        try {
          lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          lines.push({ msg: line });
        }
      }
      cb();
    },
  });
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    const config = await testConfig(issuerServer.url);
    server = await startServer(config, { logger: createLogger("info", sink) });
  } catch (err) {
    await issuerServer.close();
    throw err;
  }
  // Each request's access line holds its method, route and status (plugins/access-log.ts).
  const requests = (): LoggedRequest[] => {
    const out: LoggedRequest[] = [];
    for (const l of lines) {
      const req = l.req as { method?: string; path?: string } | undefined;
      const res = l.res as { statusCode?: number } | undefined;
      if (req?.method && req.path && res?.statusCode !== undefined) {
        out.push({ method: req.method, path: req.path, statusCode: res.statusCode });
      }
    }
    return out;
  };
  return {
    url: server.url,
    issuer: issuerServer.issuer,
    lines,
    requests,
    audits: () => lines.filter((l) => l.audit).map((l) => l.audit as Record<string, unknown>),
    saToken: (namespace, serviceAccount = "builder") =>
      issuerServer.issuer.mint({ namespace, serviceAccount, audiences: [AUDIENCE] }),
    close: async () => {
      await server.close();
      await issuerServer.close();
    },
  };
}
