/**
 * `npm run bench`: the token exchange measured against its crypto floor and two minimal reference servers
 * (bare node:crypto, and jose), on this machine, in one run, ending with the issue-16 targets. See
 * bench/README.md for the modes and how to read the tables.
 *
 *   npm run bench                          the full table (memory and Redis, 1 and 2 workers, targets)
 *   npm run bench -- --quick               the same, smaller (a smoke test of the benchmark itself)
 *   npm run bench -- --soak                1M hot+mixed requests, RSS every 100k
 *   npm run bench -- --profile             also write and summarise a CPU profile per scenario
 *   npm run bench -- --tsx                 run the service from src/ with tsx instead of building dist/
 *   npm run bench -- --entry FILE          run this build of the CLI instead (e.g. another tree's dist/bin.js)
 *   npm run bench -- --entry A --entry B   compare builds interleaved (also --compare A,B); --rounds N
 *   npm run bench -- --node-options "..."  extra node flags for the service (e.g. --max-old-space-size=128)
 *   options: --workers N (default 2) --connections C (32) --store memory|redis|both --log-level L (info)
 *            --only uncached,hot,pull-burst,credential-provider,review-uncached,review-hot,plumbing,
 *                   at-rest,half-rate,storm
 *            --autocannon (closed-loop rows on autocannon even when wrk is installed)
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  BenchEnv,
  type FloorResult,
  HAS_CREDENTIAL_PROVIDER,
  type Service,
  type StoreKind,
} from "./lib/env.js";
import {
  autocannonRequests,
  closedLoopGenerator,
  type LoadResult,
  runClosed,
  runLoad,
  runPaced,
} from "./lib/load.js";
import { buildService, mib, processTreeRss, ROOT, treeCpuSeconds, treeMemory } from "./lib/procs.js";
import { connectProfiler, inspectorUrl } from "./lib/profiler.js";
import type { ReferenceKind } from "./lib/reference.js";
import { formatTable, median, summariseProfiles, type TargetLine, targetsTable } from "./lib/report.js";
import {
  CREDENTIAL_PROVIDER_AUDIENCE,
  type Cursor,
  credentialProviderPlan,
  HEALTHZ_PLAN,
  hotPlan,
  mintPool,
  mixedRequests,
  type PoolToken,
  pullBurstRequests,
  uncachedPlan,
} from "./lib/workload.js";
import type { PlannedRequest } from "./lib/wrk.js";

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    soak: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    tsx: { type: "boolean", default: false },
    entry: { type: "string", multiple: true },
    compare: { type: "string" },
    rounds: { type: "string", default: "1" },
    autocannon: { type: "boolean", default: false },
    "node-options": { type: "string", default: "" },
    workers: { type: "string", default: "2" },
    connections: { type: "string", default: "32" },
    store: { type: "string", default: "both" },
    "log-level": { type: "string", default: "info" },
    only: { type: "string" },
    "soak-requests": { type: "string", default: "1000000" },
  },
});

const C = Number(opt.connections);
const WORKERS = Number(opt.workers);
const STORES: StoreKind[] = opt.store === "both" ? ["memory", "redis"] : [opt.store as StoreKind];
const ONLY = opt.only ? new Set(opt.only.split(",")) : undefined;
const want = (s: string) => !ONLY || ONLY.has(s);
const SIZE = opt.quick
  ? {
      uncached: 5_000,
      hot: 20_000,
      reference: 3_000,
      floor: 2_000,
      pool: 8_000,
      warm: 2_000,
      warmPool: 4_000,
      halfRateSeconds: 3,
    }
  : {
      uncached: 30_000,
      hot: 100_000,
      reference: 15_000,
      floor: 10_000,
      pool: 40_000,
      warm: 3_000,
      warmPool: 8_000,
      halfRateSeconds: 8,
    };
/** At most this many uncached warm-up rounds per instance (fewer with --quick: a smoke test). */
const WARM_ROUNDS = opt.quick ? 4 : 8;
/** Tokens the soak cycles over. */
const SOAK_POOL = 5_000;
/** Pods of the pull burst pulling at the same time (a divisor of the 500 pods). */
const BURST_CONCURRENCY = 50;
/** No single load runs longer than this. */
const MAX_SECONDS = 90;
const STAMP = new Date().toISOString().replace(/[:.]/g, "-");
const RESULTS = join(ROOT, "bench", "results");
const PROFILES = join(RESULTS, `profiles-${STAMP}`);

const T0 = Date.now();
/** Progress on stderr, with the minutes and seconds since the start. */
const log = (line: string) => {
  const t = Math.round((Date.now() - T0) / 1000);
  process.stderr.write(`[${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}] ${line}\n`);
};

/** One measured scenario next to the references measured just before it. */
interface Row {
  scenario: string;
  /** Label of the build (`--entry`) that ran it: A, B, ... */
  entry: string;
  store: StoreKind;
  workers: number;
  load: LoadResult;
  /** CPU of the service (all processes and threads) during the load, seconds. */
  cpuSeconds: number;
  peakRssMiB: number;
  floor: FloorResult;
  /** The bare node:crypto reference server, uncached, just before. */
  bare: Measured;
  /** The jose reference server, uncached, just before. */
  ref: Measured;
  /** Requests that had to reuse a pool token (should be 0 for uncached). */
  repeats: number;
  profile?: Profile;
}

/** A build of the CLI under test, and its label in the tables. */
interface Entry {
  label: string;
  path: string;
}
const ENTRY_PATHS = [...(opt.entry ?? []), ...(opt.compare?.split(",").filter((e) => e !== "") ?? [])];
if (ENTRY_PATHS.length === 0) {
  log(
    opt.tsx
      ? "service runs from src/ under tsx"
      : "building the service (tsc -p tsconfig.build.json -> dist/)",
  );
  ENTRY_PATHS.push(opt.tsx ? join(ROOT, "src", "bin.ts") : buildService());
}
const ENTRIES: Entry[] = ENTRY_PATHS.map((path, i) => ({ label: String.fromCharCode(65 + i), path }));
const ROUNDS = Math.max(1, Number(opt.rounds));
/** Closed-loop rows run on wrk when it is installed (autocannon takes 5-10x its CPU per request). */
const GENERATOR = closedLoopGenerator(opt.autocannon!);
if (GENERATOR === "autocannon") {
  log(
    opt.autocannon
      ? "closed-loop rows on autocannon (--autocannon)"
      : "wrk not found: closed-loop rows fall back to autocannon (its CPU per request is 5-10x wrk's)",
  );
}
const NODE_OPTIONS = opt["node-options"]!.split(" ").filter((a) => a !== "");
const env = await BenchEnv.create(STORES.includes("redis"));
const cursorOf = (): Cursor => ({ next: 0, wrapped: 0 });
let runSerial = 0;

/** Closed-loop load on this run's generator (wrk, or autocannon as the fallback). */
function closed(
  url: string,
  amount: number,
  plan: PlannedRequest[],
  cycle: boolean,
  maxSeconds = MAX_SECONDS,
): Promise<LoadResult> {
  return runClosed({ url, connections: C, amount, maxSeconds, plan, cycle }, GENERATOR, env.dir);
}

/** Uncached requests for autocannon (the paced, storm and soak runs), `amount` of them from `cursor`. */
function uncachedAutocannon(tokens: PoolToken[], run: string, cursor: Cursor, amount: number) {
  return autocannonRequests(uncachedPlan(tokens, run, cursor, amount));
}

/** Runs `body` once per build, `ROUNDS` times in turn (A, B, A, B, ...), so all see the same load. */
async function interleaved<T>(body: (entry: Entry) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let round = 0; round < ROUNDS; round++) for (const entry of ENTRIES) out.push(await body(entry));
  return out;
}

// The soak needs only the 5,000 tokens it cycles over (and one of them as the hot token).
const POOLS = opt.soak
  ? { pool: SOAK_POOL, warm: 0, burst: 0, cp: 0 }
  : {
      pool: SIZE.pool,
      warm: SIZE.warmPool,
      burst: want("pull-burst") ? 500 : 0,
      cp: HAS_CREDENTIAL_PROVIDER && want("credential-provider") ? SIZE.uncached + SIZE.warm : 0,
    };
log(`minting ${POOLS.pool + POOLS.warm + POOLS.burst + POOLS.cp} service-account tokens...`);
const mintStart = Date.now();
const pool = await mintPool(env.issuer, POOLS.pool, 10, "u");
const warmPool = await mintPool(env.issuer, POOLS.warm, 10, "w");
const burstPods = await mintPool(env.issuer, POOLS.burst, 5, "b");
const cpPool = await mintPool(env.issuer, POOLS.cp, 10, "c", CREDENTIAL_PROVIDER_AUDIENCE);
log(`  minted in ${((Date.now() - mintStart) / 1000).toFixed(1)} s`);

/**
 * Warms a fresh instance (JIT, connections, key import) on tokens no scenario uses: rounds of uncached
 * requests until two rounds in a row agree within 10% (at most {@link WARM_ROUNDS}), then hot requests.
 * Node needs several thousand requests before its throughput settles; measuring earlier understates it
 * by half.
 */
async function warmUp(url: string): Promise<void> {
  const cursor = cursorOf();
  let previous = 0;
  for (let round = 0; round < WARM_ROUNDS; round++) {
    const plan = uncachedPlan(warmPool, `warm${++runSerial}`, cursor, SIZE.warm);
    const r = await closed(url, SIZE.warm, plan, false, 30);
    if (round >= 1 && Math.abs(r.rps - previous) <= 0.1 * previous) break;
    previous = r.rps;
  }
  await closed(url, SIZE.warm * 2, hotPlan(warmPool[0]!), true, 30);
}

/** A load result with the CPU time the process under test spent on it. */
interface Measured {
  load: LoadResult;
  /** CPU of the process tree under test during the load, all threads, seconds. */
  cpuSeconds: number;
}

/** A reference server (started once, warmed) under `plan`: its figures and CPU. */
async function measureReference(
  kind: ReferenceKind,
  amount: number,
  plan: PlannedRequest[],
  cycle: boolean,
): Promise<Measured> {
  const reference = await env.reference(kind, warmUp);
  const cpu0 = treeCpuSeconds(reference.child.pid);
  const load = await closed(reference.url, amount, plan, cycle);
  return { load, cpuSeconds: treeCpuSeconds(reference.child.pid) - cpu0 };
}

/** The references, measured right before a scenario so all see the same machine load. */
async function references(): Promise<{ floor: FloorResult; bare: Measured; ref: Measured }> {
  const floor = await env.floor(
    pool.slice(0, 2_000).map((t) => t.token),
    SIZE.floor,
    C,
  );
  const uncached = (kind: ReferenceKind) =>
    measureReference(
      kind,
      SIZE.reference,
      uncachedPlan(pool, `${kind}${++runSerial}`, cursorOf(), SIZE.reference),
      false,
    );
  const bare = await uncached("bare");
  const ref = await uncached("jose");
  return { floor, bare, ref };
}

type Profile = ReturnType<typeof summariseProfiles>;

/**
 * Starts a fresh service, warms it (unless `warm` is false), runs `body` as the measured phase (CPU
 * time and, with --profile on one process, a CPU profile of exactly that phase), reads its peak RSS
 * and stops it.
 */
async function withService<T>(
  entry: Entry,
  store: StoreKind,
  workers: number,
  name: string,
  warm: boolean | ((url: string) => Promise<void>),
  body: (svc: Service) => Promise<T>,
  server: Record<string, unknown> = {},
  cluster?: Record<string, unknown>,
): Promise<{ result: T; cpuSeconds: number; peakRssMiB: number; profile?: Profile }> {
  const profiling = opt.profile && workers === 1;
  const svc = await env.startService({
    cluster,
    store,
    workers,
    logLevel: opt["log-level"]!,
    inspect: profiling,
    server,
    entry: entry.path,
    nodeOptions: NODE_OPTIONS,
  });
  try {
    if (warm) await warmUp(svc.url);
    if (typeof warm === "function") await warm(svc.url);
    const session = profiling ? await connectProfiler(inspectorUrl(svc.child.stderr())!) : undefined;
    await session?.start();
    const cpu0 = treeCpuSeconds(svc.child.pid);
    const result = await body(svc);
    const cpuSeconds = treeCpuSeconds(svc.child.pid) - cpu0;
    if (svc.child.proc.exitCode !== null || svc.child.proc.signalCode !== null) {
      log(`WARNING: ${name}: the service exited during the run:\n${svc.child.stderr()}`);
    }
    let profile: Profile | undefined;
    if (session) {
      mkdirSync(PROFILES, { recursive: true });
      const file = join(PROFILES, `${name}.cpuprofile`);
      await session.stopTo(file);
      profile = summariseProfiles([file]);
    }
    const peakRssMiB = mib(treeMemory(svc.child.pid).hwm);
    return { result, cpuSeconds, peakRssMiB, ...(profile ? { profile } : {}) };
  } finally {
    await svc.stop();
  }
}

/**
 * The review rows run the uncached / hot workloads on a service whose cluster has `verification: both`
 * against the stand-in API server (test/helpers/apiserver.ts, in this process, on loopback): every
 * uncached request costs a TokenReview; hot requests are answered from the review cache.
 */
const REVIEW_ROWS: Record<string, string> = { "review-uncached": "uncached", "review-hot": "hot" };

async function scenarioRow(row: string, store: StoreKind, workers: number, entry: Entry): Promise<Row> {
  const tag = ENTRIES.length > 1 ? ` / ${entry.label}` : "";
  log(`${row} / ${store} / ${workers} worker(s)${tag}...`);
  const scenario = REVIEW_ROWS[row] ?? row;
  const api = REVIEW_ROWS[row] ? await env.apiServer() : undefined;
  const reviews0 = api?.reviews() ?? 0;
  const cluster = api
    ? { verification: "both", apiServer: { url: api.url }, review: { cacheTtlSeconds: 10, timeoutMs: 2000 } }
    : undefined;
  const { floor, bare, ref } = await references();
  const cursor = cursorOf();
  const name = `${row}-${store}-w${workers}-${entry.label.toLowerCase()}${++runSerial}`;
  // The credential-provider path gets its own warm-up on top of the common one (pool tokens 0..warm).
  const cpCursor: Cursor = { next: SIZE.warm, wrapped: 0 };
  const warm =
    scenario === "credential-provider"
      ? (url: string) =>
          closed(url, SIZE.warm, credentialProviderPlan(cpPool, cursorOf(), SIZE.warm), false, 30).then(
            () => undefined,
          )
      : true;
  const measured = await withService(
    entry,
    store,
    workers,
    name,
    warm,
    async (svc) => {
      switch (scenario) {
        case "uncached":
          return closed(svc.url, SIZE.uncached, uncachedPlan(pool, name, cursor, SIZE.uncached), false);
        case "hot":
          return closed(svc.url, SIZE.hot, hotPlan(pool[0]!), true);
        case "pull-burst":
          // autocannon: each connection is a pod asking for its 3 repositories in turn. 50 pods at a time:
          // autocannon gives each connection an equal share of `amount`, and a share must be whole pods.
          return runLoad({
            url: svc.url,
            connections: BURST_CONCURRENCY,
            maxSeconds: MAX_SECONDS,
            amount: burstPods.length * 3,
            requests: pullBurstRequests(burstPods, cursor),
          });
        case "credential-provider":
          return closed(
            svc.url,
            SIZE.uncached,
            credentialProviderPlan(cpPool, cpCursor, SIZE.uncached),
            false,
          );
        default:
          throw new Error(`unknown scenario ${scenario}`);
      }
    },
    {},
    cluster,
  );
  if (api)
    log(`  ${api.reviews() - reviews0} TokenReviews served by the stand-in API server (warm-up included)`);
  if (measured.result.timedOut)
    log(`  note: ${name} stopped at the ${MAX_SECONDS} s limit, before its count`);
  return {
    scenario: row,
    entry: entry.label,
    store,
    workers,
    load: measured.result,
    cpuSeconds: measured.cpuSeconds,
    peakRssMiB: measured.peakRssMiB,
    floor,
    bare,
    ref,
    repeats: cursor.wrapped + cpCursor.wrapped,
    ...(measured.profile ? { profile: measured.profile } : {}),
  };
}

/** The plumbing row: `GET /healthz` on the service (one process, memory) vs the bare server's. */
interface Plumbing {
  entry: string;
  service: Measured;
  bare: Measured;
}

/** `GET /healthz`, closed-loop, on a fresh warmed service and on the bare reference just before. */
async function plumbing(entry: Entry): Promise<Plumbing> {
  log(`plumbing (GET /healthz)${ENTRIES.length > 1 ? ` / ${entry.label}` : ""}...`);
  const bare = await measureReference("bare", SIZE.hot, HEALTHZ_PLAN, true);
  const measured = await withService(
    entry,
    "memory",
    1,
    `plumbing-${entry.label}${++runSerial}`,
    true,
    (svc) => closed(svc.url, SIZE.hot, HEALTHZ_PLAN, true),
  );
  return { entry: entry.label, service: { load: measured.result, cpuSeconds: measured.cpuSeconds }, bare };
}

/** Seconds a freshly ready service idles before its RSS is read for the at-rest row. */
const REST_SECONDS = 2;

/** RSS of a service at rest: started, ready, {@link REST_SECONDS} idle, no load. */
interface AtRest {
  entry: string;
  store: StoreKind;
  workers: number;
  /** Processes read (the primary and its workers). */
  processes: number;
  /** RSS summed over them, MiB. */
  rssMiB: number;
  /** The largest single process's RSS, MiB. */
  maxProcessMiB: number;
}

async function atRest(entry: Entry, store: StoreKind, workers: number): Promise<AtRest> {
  log(`at rest / ${store} / ${workers} worker(s)${ENTRIES.length > 1 ? ` / ${entry.label}` : ""}...`);
  const { result } = await withService(
    entry,
    store,
    workers,
    `at-rest-${store}-w${workers}`,
    false,
    async (svc) => {
      await new Promise((r) => setTimeout(r, REST_SECONDS * 1000));
      const perProcess = processTreeRss(svc.child.pid);
      return {
        processes: perProcess.length,
        rssMiB: mib(perProcess.reduce((a, b) => a + b, 0)),
        maxProcessMiB: mib(Math.max(...perProcess)),
      };
    },
  );
  return { entry: entry.label, store, workers, ...result };
}

/** p99 of uncached requests paced at half the rate the same set-up sustained closed-loop. */
async function halfRate(entry: Entry, store: StoreKind, maxRps: number) {
  const rate = Math.max(1, Math.floor(maxRps / 2));
  const amount = Math.min(pool.length - C, rate * SIZE.halfRateSeconds);
  log(
    `uncached at half the maximum (${rate} req/s) / ${store}${ENTRIES.length > 1 ? ` / ${entry.label}` : ""}...`,
  );
  const { result } = await withService(entry, store, 1, `half-rate-${store}`, true, async (svc) =>
    runPaced(
      {
        url: svc.url,
        connections: C,
        amount,
        maxSeconds: MAX_SECONDS,
        requests: uncachedAutocannon(pool, `half${++runSerial}`, cursorOf(), amount),
      },
      rate,
    ),
  );
  return { entry: entry.label, store, rate, load: result };
}

/** 1,000 concurrent requests whose tokens carry a `kid` the instance has not seen: JWKS fetches. */
async function storm(entry: Entry, store: StoreKind, workers: number) {
  log(
    `unknown-kid storm / ${store} / ${workers} worker(s)${ENTRIES.length > 1 ? ` / ${entry.label}` : ""}...`,
  );
  const { result } = await withService(
    entry,
    store,
    workers,
    `storm-${store}-w${workers}`,
    false,
    async (svc) => {
      const before = { ...env.issuer.served };
      env.issuer.rotate();
      const tokens = await mintPool(env.issuer, 1_000, 10, `storm${++runSerial}`);
      const load = await runLoad({
        url: svc.url,
        connections: 1_000,
        amount: 1_000,
        maxSeconds: 60,
        requests: uncachedAutocannon(tokens, `storm${runSerial}`, cursorOf(), 1_000),
      });
      return {
        load,
        jwks: env.issuer.served.jwks - before.jwks,
        discovery: env.issuer.served.discovery - before.discovery,
      };
    },
    // Let all 1,000 in: the default load-shedding limit (server.maxConcurrentRequests) would refuse some.
    { maxConcurrentRequests: 2_000 },
  );
  return { entry: entry.label, store, workers, ...result };
}

/** The soak: 100k requests filling the caches to their bounds, then 900k hot+mixed; RSS every 100k. */
async function soak(entry: Entry, store: StoreKind, total: number) {
  const chunk = 100_000;
  const soakPool = pool.slice(0, SOAK_POOL);
  log(
    `soak / ${store}: ${total.toLocaleString("en-US")} requests${ENTRIES.length > 1 ? ` / ${entry.label}` : ""}...`,
  );
  const { result } = await withService(entry, store, 1, `soak-${store}`, false, async (svc) => {
    const samples: Array<{
      requests: number;
      rps: number;
      p99: number;
      errors: number;
      rssMiB: number;
      hwmMiB: number;
    }> = [];
    const fill = cursorOf();
    const mixed = cursorOf();
    const started = Date.now();
    for (let done = 0; done < total; done += chunk) {
      if (Date.now() - started > 20 * 60_000) break;
      const amount = Math.min(chunk, total - done);
      const requests =
        done === 0
          ? uncachedAutocannon(soakPool, `soak${++runSerial}`, fill, amount)
          : mixedRequests(soakPool, pool[0]!, mixed);
      const load = await runLoad({ url: svc.url, connections: C, amount, maxSeconds: 180, requests });
      const mem = treeMemory(svc.child.pid);
      samples.push({
        requests: done + load.requests,
        rps: load.rps,
        p99: load.p99,
        errors: load.errors,
        rssMiB: mib(mem.rss),
        hwmMiB: mib(mem.hwm),
      });
      log(
        `  ${(done + load.requests).toLocaleString("en-US")}: ${load.rps.toFixed(0)} req/s, RSS ${mib(mem.rss)} MiB`,
      );
    }
    return samples;
  });
  return { entry: entry.label, store, samples: result };
}

// ---- the run -------------------------------------------------------------------------------------------
const startedAt = new Date().toISOString();
const load0 = loadavg();
const rows: Row[] = [];
const plumbings: Plumbing[] = [];
const rests: AtRest[] = [];
const halfRates: Awaited<ReturnType<typeof halfRate>>[] = [];
const storms: Awaited<ReturnType<typeof storm>>[] = [];
const soaks: Awaited<ReturnType<typeof soak>>[] = [];
try {
  if (opt.soak) {
    for (const store of STORES) {
      soaks.push(...(await interleaved((e) => soak(e, store, Number(opt["soak-requests"])))));
    }
  } else {
    if (want("at-rest")) {
      for (const store of STORES) {
        for (const workers of WORKERS > 1 ? [1, WORKERS] : [1]) {
          rests.push(...(await interleaved((e) => atRest(e, store, workers))));
        }
      }
    }
    if (want("plumbing")) plumbings.push(...(await interleaved(plumbing)));
    const all = [
      "uncached",
      "hot",
      "pull-burst",
      ...(HAS_CREDENTIAL_PROVIDER ? ["credential-provider"] : []),
      "review-uncached",
      "review-hot",
    ];
    const scenarios = all.filter(want);
    for (const store of STORES) {
      for (const s of scenarios) rows.push(...(await interleaved((e) => scenarioRow(s, store, 1, e))));
    }
    if (WORKERS > 1) {
      // Both stores: with Redis the workers share caches, JWKS and limits, but redis-server takes its
      // share of the same cores; with memory each worker keeps its own.
      for (const store of STORES) {
        for (const s of ["uncached", "hot"].filter(want)) {
          rows.push(...(await interleaved((e) => scenarioRow(s, store, WORKERS, e))));
        }
      }
    }
    if (want("credential-provider") && !HAS_CREDENTIAL_PROVIDER) {
      log("credential-provider: src/routes/credential-provider.ts does not exist yet; scenario skipped");
    }
    if (want("half-rate")) {
      for (const store of STORES) {
        halfRates.push(
          ...(
            await interleaved(async (e) => {
              const max = rows.find(
                (r) =>
                  r.scenario === "uncached" && r.store === store && r.workers === 1 && r.entry === e.label,
              );
              return max ? [await halfRate(e, store, max.load.rps)] : [];
            })
          ).flat(),
        );
      }
    }
    if (want("storm")) {
      for (const store of STORES) storms.push(...(await interleaved((e) => storm(e, store, 1))));
      if (WORKERS > 1 && STORES.includes("redis")) {
        storms.push(...(await interleaved((e) => storm(e, "redis", WORKERS))));
      }
    }
  }
} finally {
  await env.close();
}

// ---- the report ----------------------------------------------------------------------------------------
const us = (cpuSeconds: number, requests: number) => (1e6 * cpuSeconds) / Math.max(1, requests);
const MULTI = ENTRIES.length > 1;
const out: string[] = [];
const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), Node ${process.version}, load average ${load0[0]!.toFixed(2)} at start, ${loadavg()[0]!.toFixed(2)} at end`;
out.push(`registry-token-exchange benchmark, ${startedAt}`, machine);
out.push(
  `${C} connections; service log level ${opt["log-level"]}; rate limiter off; each row: floor and both reference servers measured just before it`,
  `closed-loop load: ${GENERATOR === "wrk" ? "wrk (bench/lib/wrk.lua)" : `autocannon (${opt.autocannon ? "--autocannon" : "wrk is not installed"})`}; pull-burst, half-rate, storm and soak: autocannon`,
);
if (MULTI) {
  out.push(
    `builds, interleaved ${ENTRIES.map((e) => e.label).join(", ")} x ${ROUNDS} round(s): ${ENTRIES.map((e) => `${e.label} = ${e.path}`).join("; ")}`,
  );
}
out.push("");
if (rows.length > 0) {
  out.push(
    formatTable(
      [
        "scenario",
        ...(MULTI ? ["build"] : []),
        "store",
        "workers",
        "gen",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "peak RSS MiB",
        "CPU us/req",
        "bare req/s",
        "bare CPU us/req",
        "jose req/s",
        "jose CPU us/req",
        "floor req/s",
        "gen CPU us/req",
        "x bare",
        "CPU / bare CPU",
        "x jose",
      ],
      rows.map((r) => [
        r.scenario,
        ...(MULTI ? [r.entry] : []),
        r.store,
        r.workers,
        r.load.generator === "wrk" ? "wrk" : "ac",
        r.load.requests,
        r.load.rps,
        r.load.p50,
        r.load.p99,
        r.load.errors,
        r.peakRssMiB,
        us(r.cpuSeconds, r.load.requests),
        r.bare.load.rps,
        us(r.bare.cpuSeconds, r.bare.load.requests),
        r.ref.load.rps,
        us(r.ref.cpuSeconds, r.ref.load.requests),
        r.floor.rps,
        us(r.load.generatorCpuSeconds, r.load.requests),
        r.load.rps / r.bare.load.rps,
        us(r.cpuSeconds, r.load.requests) / us(r.bare.cpuSeconds, r.bare.load.requests),
        r.load.rps / r.ref.load.rps,
      ]),
    ),
  );
  const spread = (xs: number[]) =>
    `${Math.round(Math.min(...xs))}-${Math.round(Math.max(...xs))} req/s (spread ${((100 * (Math.max(...xs) - Math.min(...xs))) / Math.min(...xs)).toFixed(0)}%)`;
  out.push(
    "",
    `references across the run: bare ${spread(rows.map((r) => r.bare.load.rps))}; jose ${spread(rows.map((r) => r.ref.load.rps))}; floor ${spread(rows.map((r) => r.floor.rps))}`,
  );
  const r0 = rows[0]!;
  out.push(
    `bare reference: p50 ${r0.bare.load.p50} ms, p99 ${r0.bare.load.p99} ms; jose reference: p50 ${r0.ref.load.p50} ms, p99 ${r0.ref.load.p99} ms; crypto floor (jose, no HTTP): ${us(r0.floor.cpuSeconds, r0.floor.ops).toFixed(0)} CPU us per verify+sign (first row)`,
  );
  const repeats = rows.filter((r) => r.repeats > 0);
  if (repeats.length > 0)
    out.push(
      `WARNING: pool exhausted, repeated tokens: ${repeats.map((r) => `${r.scenario}/${r.store}: ${r.repeats}`).join(", ")}`,
    );
  const failed = (l: LoadResult) => l.errors > 0.01 * Math.max(1, l.requests);
  const failing = rows.filter((r) => failed(r.load) || failed(r.bare.load) || failed(r.ref.load));
  if (failing.length > 0)
    out.push(
      `WARNING: more than 1% errors (such figures measure refusals, not exchanges): ${failing.map((r) => `${r.scenario}/${r.store}/w${r.workers}: service ${r.load.errors}, bare ${r.bare.load.errors}, jose ${r.ref.load.errors}`).join("; ")}`,
    );
  const cut = rows.filter((r) => r.load.timedOut);
  if (cut.length > 0)
    out.push(
      `note: stopped at the ${MAX_SECONDS} s limit before their count: ${cut.map((r) => `${r.scenario}/${r.store}/w${r.workers}`).join(", ")}`,
    );
}
if (plumbings.length > 0) {
  out.push("", "plumbing: GET /healthz closed-loop, the service (one process) vs the bare node:http server");
  out.push(
    formatTable(
      [
        ...(MULTI ? ["build"] : ["row"]),
        "req/s",
        "p99 ms",
        "CPU us/req",
        "bare req/s",
        "bare CPU us/req",
        "x bare",
        "CPU - bare CPU",
        "gen CPU us/req",
      ],
      plumbings.map((p) => [
        MULTI ? p.entry : "plumbing",
        p.service.load.rps,
        p.service.load.p99,
        us(p.service.cpuSeconds, p.service.load.requests),
        p.bare.load.rps,
        us(p.bare.cpuSeconds, p.bare.load.requests),
        p.service.load.rps / p.bare.load.rps,
        us(p.service.cpuSeconds, p.service.load.requests) - us(p.bare.cpuSeconds, p.bare.load.requests),
        us(p.service.load.generatorCpuSeconds, p.service.load.requests),
      ]),
    ),
  );
}
if (rests.length > 0) {
  out.push("", `at rest: RSS of a fresh service, ready, ${REST_SECONDS} s idle, no load (target: <= 80 MiB)`);
  out.push(
    formatTable(
      [...(MULTI ? ["build"] : []), "store", "workers", "processes", "RSS MiB (all)", "largest process MiB"],
      rests.map((r) => [
        ...(MULTI ? [r.entry] : []),
        r.store,
        r.workers,
        r.processes,
        r.rssMiB,
        r.maxProcessMiB,
      ]),
    ),
  );
}
if (halfRates.length > 0) {
  out.push(
    "",
    "uncached, paced at half the maximum sustained rate, spread over 25 staggered autocannon instances (target: p99 <= 10 ms)",
  );
  out.push(
    formatTable(
      [
        ...(MULTI ? ["build"] : []),
        "store",
        "rate req/s",
        "requests",
        "achieved req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
      ],
      halfRates.map((h) => [
        ...(MULTI ? [h.entry] : []),
        h.store,
        h.rate,
        h.load.requests,
        h.load.rps,
        h.load.p50,
        h.load.p99,
        h.load.max,
        h.load.errors,
      ]),
    ),
  );
}
if (storms.length > 0) {
  out.push(
    "",
    "unknown-kid storm: 1,000 concurrent requests right after a key rotation (target: one JWKS fetch per instance)",
  );
  out.push(
    formatTable(
      [
        ...(MULTI ? ["build"] : []),
        "store",
        "workers",
        "requests",
        "2xx",
        "JWKS fetches",
        "discovery fetches",
        "seconds",
      ],
      storms.map((s) => [
        ...(MULTI ? [s.entry] : []),
        s.store,
        s.workers,
        s.load.requests,
        s.load.ok,
        s.jwks,
        s.discovery,
        s.load.seconds,
      ]),
    ),
  );
}
for (const s of soaks) {
  out.push(
    "",
    `soak / ${s.store}${MULTI ? ` / ${s.entry}` : ""}: first 100k fill the caches (distinct scopes), then hot+mixed`,
  );
  out.push(
    formatTable(
      ["after requests", "req/s", "p99 ms", "errors", "RSS MiB", "peak RSS MiB"],
      s.samples.map((x) => [x.requests, x.rps, x.p99, x.errors, x.rssMiB, x.hwmMiB]),
    ),
  );
  const second = s.samples[1];
  const last = s.samples.at(-1);
  if (second && last) {
    out.push(
      `RSS growth from the 2nd to the last 100k: ${(last.rssMiB - second.rssMiB).toFixed(1)} MiB; peak ${last.hwmMiB} MiB`,
    );
  }
}

/** Median CPU us/req and req/s of one build's rows of one scenario/store/workers. */
function medianOf(entry: string, scenario: string, store: StoreKind, workers: number) {
  const rs = rows.filter(
    (r) => r.entry === entry && r.scenario === scenario && r.store === store && r.workers === workers,
  );
  if (rs.length === 0) return undefined;
  return {
    cpu: median(rs.map((r) => us(r.cpuSeconds, r.load.requests))),
    rps: median(rs.map((r) => r.load.rps)),
    bareRps: median(rs.map((r) => r.bare.load.rps)),
    bareCpu: median(rs.map((r) => us(r.bare.cpuSeconds, r.bare.load.requests))),
    xBare: median(rs.map((r) => r.load.rps / r.bare.load.rps)),
    cpuOverBare: median(
      rs.map((r) => us(r.cpuSeconds, r.load.requests) / us(r.bare.cpuSeconds, r.bare.load.requests)),
    ),
  };
}

if (MULTI && (rows.length > 0 || plumbings.length > 0)) {
  const keys = [...new Map(rows.map((r) => [`${r.scenario}|${r.store}|${r.workers}`, r])).values()];
  const summary: Array<Array<string | number | undefined>> = keys.map((k) => {
    const per = ENTRIES.map((e) => medianOf(e.label, k.scenario, k.store, k.workers));
    const a = per[0];
    return [
      k.scenario,
      k.store,
      k.workers,
      ...per.flatMap((m) => [m?.cpu, m?.rps]),
      ...per
        .slice(1)
        .flatMap((m) => [m && a ? m.cpu / a.cpu : undefined, m && a ? m.rps / a.rps : undefined]),
    ];
  });
  if (plumbings.length > 0) {
    const per = ENTRIES.map((e) => {
      const ps = plumbings.filter((p) => p.entry === e.label);
      return ps.length === 0
        ? undefined
        : {
            cpu: median(ps.map((p) => us(p.service.cpuSeconds, p.service.load.requests))),
            rps: median(ps.map((p) => p.service.load.rps)),
          };
    });
    const a = per[0];
    summary.push([
      "plumbing",
      "memory",
      1,
      ...per.flatMap((m) => [m?.cpu, m?.rps]),
      ...per
        .slice(1)
        .flatMap((m) => [m && a ? m.cpu / a.cpu : undefined, m && a ? m.rps / a.rps : undefined]),
    ]);
  }
  out.push("", `per build: medians over ${ROUNDS} round(s), and each build against A`);
  out.push(
    formatTable(
      [
        "scenario",
        "store",
        "workers",
        ...ENTRIES.flatMap((e) => [`${e.label} CPU us/req`, `${e.label} req/s`]),
        ...ENTRIES.slice(1).flatMap((e) => [`${e.label}/A CPU`, `${e.label}/A req/s`]),
      ],
      summary,
    ),
  );
}

// ---- the issue-16 targets --------------------------------------------------------------------------------
const MB = 1_000_000 / (1024 * 1024);
for (const e of ENTRIES) {
  const lines: TargetLine[] = [];
  const fmt = (x: number, d = 2) => x.toFixed(d);
  for (const store of STORES) {
    const u = medianOf(e.label, "uncached", store, 1);
    lines.push({
      target: `uncached, one process >= 0.8 x bare req/s (${store})`,
      figure: u ? `${fmt(u.xBare)} x (${Math.round(u.rps)} vs ${Math.round(u.bareRps)} req/s)` : undefined,
      met: u ? u.xBare >= 0.8 : undefined,
    });
    lines.push({
      target: `uncached, one process CPU <= 1.25 x bare CPU (${store})`,
      figure: u
        ? `${fmt(u.cpuOverBare)} x (${Math.round(u.cpu)} vs ${Math.round(u.bareCpu)} us/req)`
        : undefined,
      met: u ? u.cpuOverBare <= 1.25 : undefined,
    });
    const h = medianOf(e.label, "hot", store, 1);
    lines.push({
      target: `cached, one process >= 2.5 x bare uncached req/s (${store})`,
      figure: h ? `${fmt(h.xBare)} x (${Math.round(h.rps)} vs ${Math.round(h.bareRps)} req/s)` : undefined,
      met: h ? h.xBare >= 2.5 : undefined,
    });
    for (const scenario of ["uncached", "hot"]) {
      const one = medianOf(e.label, scenario, store, 1);
      const many = WORKERS > 1 ? medianOf(e.label, scenario, store, WORKERS) : undefined;
      lines.push({
        target: `--workers ${WORKERS > 1 ? WORKERS : 2} >= 1.7 x one process, ${scenario} (${store})`,
        figure:
          one && many
            ? `${fmt(many.rps / one.rps)} x (${Math.round(many.rps)} vs ${Math.round(one.rps)} req/s)`
            : undefined,
        met: one && many ? many.rps / one.rps >= 1.7 : undefined,
      });
    }
    const half = halfRates.filter((x) => x.entry === e.label && x.store === store);
    lines.push({
      target: `p99 <= 10 ms at half the maximum rate, uncached (${store})`,
      figure:
        half.length > 0
          ? half
              .map((x) => `${x.load.p99.toFixed(x.load.p99 >= 100 ? 0 : 2)} ms at ${x.rate} req/s`)
              .join(", ")
          : undefined,
      met: half.length > 0 ? half.every((x) => x.load.p99 <= 10) : undefined,
    });
    const rest = rests.filter((x) => x.entry === e.label && x.store === store);
    const rest1 = rest.filter((x) => x.workers === 1);
    const restN = rest.filter((x) => x.workers > 1);
    lines.push({
      target: `RSS at rest <= 80 MiB, one process (${store})`,
      figure:
        rest1.length > 0
          ? `${rest1.map((x) => `${x.rssMiB} MiB`).join(", ")}${restN.length > 0 ? `; ${WORKERS} workers: ${restN.map((x) => `${x.rssMiB} MiB in ${x.processes} processes`).join(", ")}` : ""}`
          : undefined,
      met: rest1.length > 0 ? rest1.every((x) => x.rssMiB <= 80) : undefined,
    });
    const soaked = soaks.filter((x) => x.entry === e.label && x.store === store && x.samples.length > 0);
    lines.push({
      target: `1M-request soak peak RSS <= 200 MB, default heap (${store})`,
      figure:
        soaked.length > 0
          ? soaked
              .map(
                (x) => `${(x.samples.at(-1)!.hwmMiB / MB).toFixed(0)} MB after ${x.samples.at(-1)!.requests}`,
              )
              .join(", ")
          : undefined,
      met:
        soaked.length > 0
          ? soaked.every((x) => x.samples.at(-1)!.hwmMiB / MB <= 200 && x.samples.at(-1)!.requests >= 1e6)
          : undefined,
      how: soaked.length > 0 ? undefined : "npm run bench -- --soak",
    });
    const rh = medianOf(e.label, "review-hot", store, 1);
    lines.push({
      target: `a cached TokenReview adds <= 10 us/request (${store})`,
      figure:
        rh && h
          ? `${fmt(rh.cpu - h.cpu, 1)} us (review-hot ${Math.round(rh.cpu)} vs hot ${Math.round(h.cpu)})`
          : undefined,
      met: rh && h ? rh.cpu - h.cpu <= 10 : undefined,
    });
  }
  out.push(
    "",
    `issue-16 targets${MULTI ? `, build ${e.label} (medians over ${ROUNDS} round(s))` : ""}: ratios within this run`,
  );
  out.push(targetsTable(lines));
}

for (const r of rows.filter((x) => x.profile)) {
  out.push(
    "",
    `CPU profile: ${r.scenario} / ${r.store} / ${r.workers} worker(s), ${r.profile!.samples} samples, self time`,
  );
  out.push(
    formatTable(
      ["package", "%"],
      r.profile!.packages.map((p) => [p.name, p.selfPct]),
    ),
  );
  out.push(
    formatTable(
      ["function", "%"],
      r.profile!.functions.map((p) => [p.name, p.selfPct]),
    ),
  );
}

const text = out.join("\n");
process.stdout.write(`\n${text}\n`);
mkdirSync(RESULTS, { recursive: true });
const file = join(RESULTS, `${opt.soak ? "soak" : "bench"}-${STAMP}.json`);
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
writeFileSync(
  file,
  JSON.stringify(
    {
      startedAt,
      version: pkg.version,
      machine,
      options: opt,
      entries: ENTRIES,
      generator: GENERATOR,
      sizes: SIZE,
      rows,
      plumbings,
      atRest: rests,
      halfRates,
      storms,
      soaks,
      table: text,
    },
    null,
    2,
  ),
);
process.stdout.write(`\nwritten: ${file}\n`);
