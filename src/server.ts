/**
 * Running the app: listen, warm the cluster key sets, and shut down gracefully on SIGTERM/SIGINT
 * (stop accepting, finish in-flight requests, close connections).
 */
import type { FastifyInstance } from "fastify";
import { type AppDeps, buildApp } from "./app.js";
import type { Config } from "./config/schema.js";

/** A running server. */
export interface RunningServer {
  app: FastifyInstance;
  /** The base URL it listens on, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Stops it gracefully. */
  close: () => Promise<void>;
}

/**
 * Builds the app, listens on `config.server.host:port`, and starts loading every cluster's keys.
 * @param handleSignals install SIGTERM/SIGINT handlers that close the server and exit (CLI only)
 * @throws {ConfigError} for invalid keys or policy; listen errors (EADDRINUSE) as thrown by Node
 */
export async function startServer(
  config: Config,
  deps: AppDeps = {},
  handleSignals = false,
): Promise<RunningServer> {
  const app = await buildApp(config, deps);
  await app.listen({ host: config.server.host, port: config.server.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.server.port;
  const host =
    config.server.host === "0.0.0.0" || config.server.host === "::" ? "127.0.0.1" : config.server.host;
  const scheme = config.server.tls ? "https" : "http";
  const url = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  // Warm the key caches so the first pull does not pay for discovery; failures are logged by the key set.
  for (const ks of app.exchange.keySets) ks.refresh().catch(() => {});
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= app.close();
    return closing;
  };
  if (handleSignals) {
    const onSignal = (signal: NodeJS.Signals) => {
      app.log.info({ signal }, "shutting down");
      const timer = setTimeout(() => process.exit(1), 10_000);
      timer.unref();
      close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  }
  return { app, url, close };
}
