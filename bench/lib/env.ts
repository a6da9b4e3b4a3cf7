/**
 * The benchmark's fixed surroundings for one run: a signing key, a LocalIssuer on 127.0.0.1 (whose
 * `served.jwks` counts JWKS fetches), our own spawned `redis-server` (never a shared one), the minimal
 * reference server, and fresh service processes on demand.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import type { JSONWebKeySet } from "jose";
import { generateSigningKeyFiles } from "../../src/jose/signing-key.js";
import { type LocalIssuer, startLocalIssuerServer } from "../../src/local/issuer.js";
import { type StandInApiServer, startStandInApiServer } from "../../test/helpers/apiserver.js";
import { freePort, SpawnedRedis } from "../../test/helpers/redis.js";
import { type Child, ROOT, runNodeJson, startNode, waitReady } from "./procs.js";
import type { ReferenceInput, ReferenceKind } from "./reference.js";
import { SERVICE, writeServiceConfig } from "./workload.js";

/** Whether `/v1/credential-provider` exists in this tree (it was added while the benchmark was written). */
export const HAS_CREDENTIAL_PROVIDER = existsSync(join(ROOT, "src", "routes", "credential-provider.ts"));

/** Which store a service instance runs on. */
export type StoreKind = "memory" | "redis";

/** A running service instance (one process, or a cluster primary and its workers). */
export interface Service {
  url: string;
  child: Child;
  workers: number;
  stop: () => Promise<void>;
}

/** Options of {@link BenchEnv.startService} (`connectProfiler` is in `profiler.ts`). */
export interface ServiceOptions {
  store: StoreKind;
  workers: number;
  logLevel: string;
  /** Start it with the inspector on a random 127.0.0.1 port, for {@link connectProfiler}. */
  inspect?: boolean | undefined;
  /** The CLI entry point: `dist/bin.js` (see `buildService`) or `src/bin.ts` (tsx). */
  entry: string;
  /** `server` config keys to set, dropped when this tree's schema does not know them. */
  server?: Record<string, unknown> | undefined;
  /** Extra node flags (e.g. `--max-old-space-size=128`). */
  nodeOptions?: string[] | undefined;
  /** More keys of the cluster config (the review rows: `verification`, `apiServer`, `review`). */
  cluster?: Record<string, unknown> | undefined;
}

/** Crypto floor figures. */
export interface FloorResult {
  ops: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  /** CPU time of the measured part, all threads, seconds. */
  cpuSeconds: number;
}

/** See the module doc. */
export class BenchEnv {
  readonly dir: string;
  readonly keys: { keyFile: string; certFile: string };
  readonly issuer: LocalIssuer;
  readonly issuerUrl: string;
  readonly redis: SpawnedRedis | undefined;
  readonly #closeIssuer: () => Promise<void>;
  readonly #references = new Map<ReferenceKind, { child: Child; url: string }>();
  #apiServer: StandInApiServer | undefined;
  #serial = 0;

  private constructor(init: {
    dir: string;
    keys: { keyFile: string; certFile: string };
    issuer: LocalIssuer;
    issuerUrl: string;
    redis: SpawnedRedis | undefined;
    closeIssuer: () => Promise<void>;
  }) {
    this.dir = init.dir;
    this.keys = init.keys;
    this.issuer = init.issuer;
    this.issuerUrl = init.issuerUrl;
    this.redis = init.redis;
    this.#closeIssuer = init.closeIssuer;
  }

  /** Sets everything up; spawns `redis-server` only when `withRedis`. */
  static async create(withRedis: boolean): Promise<BenchEnv> {
    const dir = mkdtempSync(join(tmpdir(), "rte-bench-"));
    const keys = await generateSigningKeyFiles(join(dir, "keys"));
    const issuer = await startLocalIssuerServer();
    const redis = withRedis ? await SpawnedRedis.start() : undefined;
    return new BenchEnv({
      dir,
      keys,
      issuer: issuer.issuer,
      issuerUrl: issuer.url,
      redis,
      closeIssuer: issuer.close,
    });
  }

  /** Empties our Redis between scenarios so none starts with another's cache. */
  async flushRedis(): Promise<void> {
    if (!this.redis) return;
    const client = new Redis(this.redis.url, { maxRetriesPerRequest: 1 });
    try {
      await client.flushall();
    } finally {
      client.disconnect();
    }
  }

  /** Starts a fresh service instance through the real CLI and waits until every worker is ready. */
  async startService(opts: ServiceOptions): Promise<Service> {
    if (opts.store === "redis" && !this.redis) throw new Error("this run has no Redis");
    await this.flushRedis();
    const port = await freePort();
    const name = `service-${++this.#serial}`;
    const config = writeServiceConfig(this.dir, name, {
      port,
      issuerUrl: this.issuerUrl,
      keys: this.keys,
      redisUrl: opts.store === "redis" ? this.redis!.url : undefined,
      keyPrefix: `bench${this.#serial}:`,
      logLevel: opts.logLevel,
      credentialProvider: HAS_CREDENTIAL_PROVIDER,
      server: opts.server ?? {},
      cluster: opts.cluster,
    });
    const nodeArgs = [...(opts.nodeOptions ?? []), ...(opts.inspect ? ["--inspect=127.0.0.1:0"] : [])];
    const args = ["serve", "--config", config];
    if (opts.workers > 1) args.push("--workers", String(opts.workers));
    const child = startNode(opts.entry, args, nodeArgs);
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitReady(child, `${url}/readyz`, opts.workers * 3);
    } catch (err) {
      await child.stop();
      throw err;
    }
    return { url, child, workers: opts.workers, stop: () => child.stop(15_000) };
  }

  #referenceInput(extra: Partial<ReferenceInput>): string {
    const input: ReferenceInput = { issuerUrl: this.issuerUrl, audience: SERVICE, keys: this.keys, ...extra };
    const file = join(this.dir, `reference-${++this.#serial}.json`);
    writeFileSync(file, JSON.stringify(input));
    return file;
  }

  /**
   * A minimal reference server (`bench/reference-server.ts`; each kind started once per run, kept up).
   * @param kind `bare` (node:crypto) or `jose`
   * @param warm warms it up once started (run by the caller: it knows the workload)
   */
  async reference(
    kind: ReferenceKind,
    warm: (url: string) => Promise<void>,
  ): Promise<{ child: Child; url: string }> {
    const running = this.#references.get(kind);
    if (running) return running;
    const port = await freePort();
    const child = startNode(join(ROOT, "bench", "reference-server.ts"), [
      this.#referenceInput({ port, kind }),
    ]);
    const url = `http://127.0.0.1:${port}`;
    await waitReady(child, `${url}/healthz`);
    const started = { child, url };
    this.#references.set(kind, started);
    await warm(url);
    return started;
  }

  /** Runs the crypto floor in its own process over `tokens`. */
  async floor(tokens: string[], amount: number, concurrency: number): Promise<FloorResult> {
    const tokensFile = join(this.dir, "floor-tokens.txt");
    writeFileSync(tokensFile, `${tokens.join("\n")}\n`);
    const input = this.#referenceInput({ tokensFile, amount, concurrency });
    return runNodeJson<FloorResult>(join(ROOT, "bench", "crypto-floor.ts"), [input], 120_000);
  }

  /**
   * The stand-in kube-apiserver (test/helpers/apiserver.ts, real v1.36.2 answer shapes) reviewing the
   * local issuer's tokens, started once per run in this process, for the review rows.
   */
  async apiServer(): Promise<StandInApiServer> {
    this.#apiServer ??= await startStandInApiServer(Date.now, {
      jwks: () => this.issuer.jwks() as JSONWebKeySet,
      anyServiceAccount: true,
    });
    return this.#apiServer;
  }

  /** Stops everything this run started and removes its temp folder. */
  async close(): Promise<void> {
    await this.#apiServer?.close();
    for (const r of this.#references.values()) await r.child.stop();
    await this.redis?.stop();
    await this.#closeIssuer();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
