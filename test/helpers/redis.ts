/**
 * Where tests get Redis, in this order:
 * 1. `REDIS_URL` if set;
 * 2. a container via testcontainers (`@testcontainers/redis`) when a Docker engine answers;
 * 3. a `redis-server` spawned on a free port with a temp dir;
 * otherwise they fail with a one-line how-to. Failure tests always spawn their own `redis-server`
 * (they must kill, restart and slow it), and the Redis Cluster tests spawn three masters.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

/** The one-line how-to printed when no Redis can be found. */
const NO_REDIS_MESSAGE =
  "no Redis for the tests: set REDIS_URL=redis://127.0.0.1:6379, start a Docker engine, or install redis-server (apt-get install redis-server)";

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function hasRedisServer(): boolean {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function waitForPing(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on("error", () => {}); // refused while the server starts: expected
    try {
      await client.connect();
      if ((await client.ping()) === "PONG") return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`redis at ${url} did not answer: ${(err as Error).message}`);
    } finally {
      client.disconnect();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A `redis-server` process this test controls: stop, start again on the same port, slow down. */
export class SpawnedRedis {
  readonly port: number;
  readonly dir: string;
  #proc: ChildProcess | undefined;
  readonly #extraArgs: string[];

  private constructor(port: number, extraArgs: string[]) {
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), "rte-redis-"));
    this.#extraArgs = extraArgs;
  }

  /** `redis://127.0.0.1:<port>`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /**
   * Spawns a server on a free port (or `port`) and waits for PING.
   * @throws {Error} {@link NO_REDIS_MESSAGE} when `redis-server` is not installed
   */
  static async start(options: { port?: number; extraArgs?: string[] } = {}): Promise<SpawnedRedis> {
    if (!hasRedisServer()) throw new Error(NO_REDIS_MESSAGE);
    const r = new SpawnedRedis(options.port ?? (await freePort()), options.extraArgs ?? []);
    await r.startAgain();
    return r;
  }

  /** Starts the server (again) on the same port. */
  async startAgain(): Promise<void> {
    this.#proc = spawn(
      "redis-server",
      [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        this.dir,
        "--enable-debug-command",
        "local",
        ...this.#extraArgs,
      ],
      { stdio: "ignore" },
    );
    await waitForPing(this.url);
  }

  /** Kills the server (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    const p = this.#proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once("exit", () => resolve());
      p.kill("SIGKILL");
    });
  }

  /** Kills the server and removes its folder. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Redis for tests that only need one, resolved in the documented order. */
export interface TestRedis {
  url: string;
  /** How it was found: `env`, `testcontainers` or `spawned`. */
  source: "env" | "testcontainers" | "spawned";
  stop: () => Promise<void>;
}

function dockerMayAnswer(): boolean {
  return Boolean(process.env.DOCKER_HOST) || existsSync("/var/run/docker.sock");
}

/**
 * Resolves a Redis for tests (see the module doc).
 * @throws {Error} with {@link NO_REDIS_MESSAGE} when none can be had
 */
export async function resolveTestRedis(): Promise<TestRedis> {
  if (process.env.REDIS_URL) {
    return { url: process.env.REDIS_URL, source: "env", stop: async () => {} };
  }
  if (dockerMayAnswer()) {
    try {
      const { RedisContainer } = await import("@testcontainers/redis");
      const container = await new RedisContainer("redis:7-alpine").start();
      return {
        url: container.getConnectionUrl(),
        source: "testcontainers",
        stop: async () => void (await container.stop()),
      };
    } catch {
      // no engine answered: fall through to a spawned server
    }
  }
  const spawned = await SpawnedRedis.start();
  return { url: spawned.url, source: "spawned", stop: () => spawned.stop() };
}

/** A 3-master Redis Cluster spawned from `redis-server` binaries. */
export interface SpawnedCluster {
  nodes: Array<{ host: string; port: number }>;
  stop: () => Promise<void>;
}

/**
 * Spawns three cluster-enabled `redis-server`s and joins them with `redis-cli --cluster create`.
 * @throws {Error} {@link NO_REDIS_MESSAGE} when `redis-server` is missing
 */
export async function spawnRedisCluster(): Promise<SpawnedCluster> {
  const servers: SpawnedRedis[] = [];
  for (let i = 0; i < 3; i++) {
    servers.push(
      await SpawnedRedis.start({
        extraArgs: [
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          `nodes-${i}.conf`,
          "--cluster-node-timeout",
          "2000",
        ],
      }),
    );
  }
  execFileSync(
    "redis-cli",
    [
      "--cluster",
      "create",
      ...servers.map((s) => `127.0.0.1:${s.port}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ],
    { stdio: "ignore", timeout: 30_000 },
  );
  // Wait until every slot is served.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const out = execFileSync("redis-cli", ["-p", String(servers[0]!.port), "cluster", "info"], {
      encoding: "utf8",
    });
    if (/cluster_state:ok/.test(out)) break;
    if (Date.now() > deadline) throw new Error(`redis cluster did not become ready: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    nodes: servers.map((s) => ({ host: "127.0.0.1", port: s.port })),
    stop: async () => {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
