/**
 * Running the app: listen, warm the cluster key sets, and shut down gracefully on SIGTERM/SIGINT
 * (stop accepting, finish in-flight requests, close connections).
 */
import cluster, { type Worker } from "node:cluster";
import { type Stats, unwatchFile, watchFile } from "node:fs";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import type { AppDeps } from "./app.js";
import { BUILD_INFO } from "./build-info.js";
import { serveClusterMetrics, WORKER_ENV } from "./cluster-metrics.js";
import type { Config } from "./config/schema.js";
import { ConfigError } from "./errors.js";

/** A running server. */
export interface RunningServer {
  app: FastifyInstance;
  /** The base URL it listens on, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Stops it gracefully. */
  close: () => Promise<void>;
}

/**
 * Once shutdown begins, every response still being written says `Connection: close`, so its keep-alive
 * socket closes right after it. Without this, a connection that was busy when `close()` began (a load
 * balancer's pooled connection) stays open idle until `keepAliveTimeoutMs` and the drain outlasts the
 * shutdown deadline: the server only reaps connections that are idle at the moment it starts closing.
 */
function closeConnectionsWhenDraining(app: FastifyInstance): void {
  let draining = false;
  app.addHook("preClose", async () => {
    draining = true;
  });
  // Callback-style: an async hook costs a promise and a microtask on every response.
  app.addHook("onSend", (_request, reply, payload, done) => {
    if (draining) reply.header("connection", "close");
    done(null, payload);
  });
}

/**
 * What a process serves, for its start-up log line: the build, the config file, every cluster with where
 * its keys come from (a JWKS file, a JWKS URL, or OIDC discovery at a URL), every registry with its image
 * hosts, the cache, and whether the credential provider is on. Contains no secret (file paths only).
 * @param config the config in force
 * @param configFile the file it was read from (`undefined` when generated, as in local mode)
 */
export function startupSummary(config: Config, configFile: string | undefined): Record<string, unknown> {
  const keySource = (c: Config["clusters"][number]): string => {
    if (c.jwksFile) return `jwksFile ${c.jwksFile}`;
    if (c.jwksUri) return `jwksUri ${c.jwksUri}`;
    return `discovery ${c.discoveryUrl ?? `${c.issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`}`;
  };
  const cache = config.cache.redisUrl
    ? "memory + redis"
    : config.cache.redisSentinel
      ? "memory + redis sentinel"
      : config.cache.redisCluster
        ? "memory + redis cluster"
        : "memory";
  return {
    version: BUILD_INFO.version,
    node: BUILD_INFO.node,
    configFile: configFile ?? "(generated)",
    clusters: config.clusters.map((c) => ({ name: c.name, issuer: c.issuer, keys: keySource(c) })),
    registries: config.registries.map((r) => ({
      service: r.service,
      hosts: r.hosts ?? [r.service],
      signingCert: r.signingKey.certFile,
    })),
    cache,
    credentialProvider: config.credentialProvider ? config.credentialProvider.audiences : "off",
  };
}

/** How the config is re-read for a reload (SIGHUP, or a change of the file when watched). */
export interface ReloadSource {
  /**
   * Reads and validates the config file again.
   * @throws {ConfigError} when it is invalid
   */
  load: () => Config;
  /**
   * Poll this file (or each of these files: the layers of a layered config) for changes every
   * `intervalMs` and reload when one changes (e.g. a ConfigMap).
   */
  watchFile?: string | readonly string[] | undefined;
  /** Poll interval for `watchFile`, ms (default 5000). */
  intervalMs?: number;
  /** The config file (for the start-up log line). */
  file?: string | undefined;
}

/**
 * Re-reads the config and swaps it in atomically; a bad file is refused with a logged reason and the old
 * version keeps serving. Requests already running finish on the version they started with.
 * @returns true when the new version is in force
 */
export function reloadConfig(app: FastifyInstance, source: ReloadSource, trigger: string): boolean {
  const before = app.exchange.version;
  try {
    const { version, needsRestart } = app.exchange.reload(source.load());
    app.log.info({ trigger, from: before, to: version }, "config reloaded");
    if (needsRestart.length > 0) {
      app.log.warn({ sections: needsRestart }, "config reloaded, but these sections only change on restart");
    }
    return true;
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
    app.log.error({ trigger, version: before, problems }, "config reload refused; the running config stays");
    return false;
  }
}

/**
 * Builds the app, listens on `config.server.host:port`, and starts loading every cluster's keys.
 * @param handleSignals install SIGTERM/SIGINT handlers that close the server and exit (CLI only)
 * @param reload when given, SIGHUP (and changes of `reload.watchFile`) reload the config
 * @throws {ConfigError} for invalid keys or policy; listen errors (EADDRINUSE) as thrown by Node
 */
export async function startServer(
  config: Config,
  deps: AppDeps = {},
  handleSignals = false,
  reload?: ReloadSource,
): Promise<RunningServer> {
  // Imported here, not at the top: the primary of `serve --workers N` loads this module for
  // `runWorkers` and must not load the app (fastify, undici, ioredis...) it never runs.
  const { buildApp } = await import("./app.js");
  const app = await buildApp(config, deps);
  closeConnectionsWhenDraining(app);
  await app.listen({ host: config.server.host, port: config.server.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.server.port;
  const host =
    config.server.host === "0.0.0.0" || config.server.host === "::" ? "127.0.0.1" : config.server.host;
  const scheme = config.server.tls ? "https" : "http";
  const url = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  app.log.info(startupSummary(config, reload?.file), "registry-token-exchange started");
  // Warm the key caches so the first pull does not pay for discovery; failures are logged by the key set.
  for (const ks of app.exchange.keySets) ks.refresh().catch(() => {});
  let closing: Promise<void> | undefined;
  const stopReloading: Array<() => void> = [];
  const close = () => {
    if (!closing) {
      for (const stop of stopReloading) stop();
      closing = app.close();
    }
    return closing;
  };
  if (handleSignals) {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      // A repeated signal must not abort the drain: wrappers (npm, tsx) and a terminal's Ctrl-C deliver
      // the same signal twice, and with `once` the second one would kill the process mid-request.
      if (signalled) return;
      signalled = true;
      app.log.info({ signal }, "shutting down");
      const timer = setTimeout(() => process.exit(1), 10_000);
      timer.unref();
      close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  }
  if (handleSignals && !reload) {
    // Without a file to re-read (local mode generates its config at each start), SIGHUP would end the
    // process (Node's default action): say why nothing is reloaded and keep serving.
    const onHup = () =>
      app.log.warn(
        { signal: "SIGHUP" },
        "config not reloaded: this config is generated at start-up (local mode); restart to change it",
      );
    process.on("SIGHUP", onHup);
    stopReloading.push(() => process.off("SIGHUP", onHup));
  }
  if (reload) {
    const onHup = () => void reloadConfig(app, reload, "SIGHUP");
    process.on("SIGHUP", onHup);
    stopReloading.push(() => process.off("SIGHUP", onHup));
    const watched = typeof reload.watchFile === "string" ? [reload.watchFile] : (reload.watchFile ?? []);
    for (const file of watched) {
      const onChange = (curr: Stats, prev: Stats) => {
        if (curr.mtimeMs !== prev.mtimeMs || curr.size !== prev.size)
          reloadConfig(app, reload, "file change");
      };
      watchFile(file, { interval: reload.intervalMs ?? 5_000, persistent: false }, onChange);
      stopReloading.push(() => unwatchFile(file, onChange));
    }
  }
  return { app, url, close };
}

/** Exit status of a worker whose configuration is invalid (see `cli/index.ts`): restarting it cannot help. */
const CONFIG_ERROR_EXIT = 2;

/**
 * Runs the service as `workers` processes sharing one listening port (node:cluster: the primary accepts
 * connections and hands them to the workers in turn; it runs no app itself). Call it in the primary only:
 * each worker re-runs the same command line and starts a full instance with {@link startServer}, with its
 * own in-process cache, key sets and rate-limit window, so workers share state only through Redis
 * (`cache.redis*`), exactly as replicas do.
 *
 * Supervision: a worker that exits unexpectedly after it was serving is replaced after a second; a worker
 * that exits with status 2 (invalid configuration) stops the service with status 2, and one that exits
 * before it ever listened (the port is taken, a key cannot be read) stops it with status 1, as a single
 * process would, instead of being replaced forever. SIGTERM and SIGINT are passed on to
 * every worker as SIGTERM (each shuts down gracefully); the primary exits 0 once they have all exited,
 * or 1 if some are still running after 15 s.
 *
 * Metrics: the primary aggregates every worker's registries for the worker that receives a `/metrics`
 * scrape (`cluster-metrics.ts`), so one scrape returns sums over all workers.
 * @param workers number of worker processes, >= 2
 * @param logger the primary's logger (worker exits, shutdown)
 */
export function runWorkers(workers: number, logger: Logger): void {
  let stopping = false;
  let exitCode = 0;
  const alive = () => Object.values(cluster.workers ?? {}).filter((w) => w && !w.isDead()) as Worker[];
  const listened = new Set<number>();
  cluster.on("listening", (worker: Worker) => listened.add(worker.id));
  const stop = (code: number) => {
    exitCode = Math.max(exitCode, code);
    if (stopping) return;
    stopping = true;
    for (const w of alive()) w.process.kill("SIGTERM");
    setTimeout(() => process.exit(1), 15_000).unref();
    if (alive().length === 0) process.exit(exitCode);
  };
  cluster.on("exit", (worker: Worker, code: number | null, signal: string | null) => {
    if (!stopping && code === CONFIG_ERROR_EXIT) {
      logger.fatal({ pid: worker.process.pid }, "worker refused the configuration; stopping");
      stop(CONFIG_ERROR_EXIT);
    } else if (!stopping && !listened.has(worker.id)) {
      logger.fatal(
        { pid: worker.process.pid, code, signal },
        "worker exited before it could listen; stopping",
      );
      stop(1);
    }
    listened.delete(worker.id);
    if (stopping) {
      if (alive().length === 0) process.exit(exitCode);
      return;
    }
    logger.error({ pid: worker.process.pid, code, signal }, "worker exited; starting a replacement in 1 s");
    setTimeout(() => {
      if (!stopping) cluster.fork(WORKER_ENV);
    }, 1_000);
  });
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal, workers: alive().length }, "shutting down workers");
    stop(0);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // Each worker reloads its own config on SIGHUP (see startServer).
  process.on("SIGHUP", () => {
    for (const w of alive()) w.process.kill("SIGHUP");
  });
  serveClusterMetrics();
  for (let i = 0; i < workers; i++) cluster.fork(WORKER_ENV);
}
