/**
 * `npm run bench`: the token exchange measured against its crypto floor and a minimal reference server,
 * on this machine, in one run. See bench/README.md for the modes and how to read the tables.
 *
 *   npm run bench                          the full table (memory and Redis, 1 and 2 workers, targets)
 *   npm run bench -- --quick               the same, smaller (a smoke test of the benchmark itself)
 *   npm run bench -- --soak                1M hot+mixed requests, RSS every 100k
 *   npm run bench -- --profile             also write and summarise a CPU profile per scenario
 *   npm run bench -- --tsx                 run the service from src/ with tsx instead of building dist/
 *   npm run bench -- --entry FILE          run this build of the CLI instead (e.g. another tree's dist/bin.js)
 *   npm run bench -- --node-options "..."  extra node flags for the service (e.g. --max-old-space-size=128)
 *   options: --workers N (default 2) --connections C (32) --store memory|redis|both --log-level L (info)
 *            --only uncached,hot,pull-burst,credential-provider,review-uncached,review-hot,half-rate,storm
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
import { type LoadResult, runLoad, runPaced } from "./lib/load.js";
import { buildService, mib, ROOT, treeCpuSeconds, treeMemory } from "./lib/procs.js";
import { connectProfiler, inspectorUrl } from "./lib/profiler.js";
import { formatTable, summariseProfiles } from "./lib/report.js";
import {
  CREDENTIAL_PROVIDER_AUDIENCE,
  type Cursor,
  credentialProviderRequests,
  hotRequests,
  mintPool,
  mixedRequests,
  pullBurstRequests,
  uncachedRequests,
} from "./lib/workload.js";

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    soak: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    tsx: { type: "boolean", default: false },
    entry: { type: "string" },
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
      floor: 5_000,
      pool: 8_000,
      warm: 2_000,
      warmPool: 4_000,
      halfRateSeconds: 3,
    }
  : {
      uncached: 30_000,
      hot: 100_000,
      floor: 30_000,
      pool: 40_000,
      warm: 3_000,
      warmPool: 8_000,
      halfRateSeconds: 8,
    };
/** Tokens the soak cycles over. */
const SOAK_POOL = 5_000;
/** Pods of the pull burst pulling at the same time (a divisor of the 500 pods). */
const BURST_CONCURRENCY = 50;
/** No single load runs longer than this. */
const MAX_SECONDS = 90;
const STAMP = new Date().toISOString().replace(/[:.]/g, "-");
const RESULTS = join(ROOT, "bench", "results");
const PROFILES = join(RESULTS, `profiles-${STAMP}`);

const log = (line: string) => process.stderr.write(`${line}\n`);

/** One measured scenario next to the references measured just before it. */
interface Row {
  scenario: string;
  store: StoreKind;
  workers: number;
  load: LoadResult;
  /** CPU of the service (all processes and threads) during the load, seconds. */
  cpuSeconds: number;
  peakRssMiB: number;
  floor: FloorResult;
  ref: Measured;
  /** Requests that had to reuse a pool token (should be 0 for uncached). */
  repeats: number;
  profile?: Profile;
}

if (!opt.entry) {
  log(
    opt.tsx
      ? "service runs from src/ under tsx"
      : "building the service (tsc -p tsconfig.build.json -> dist/)",
  );
}
const ENTRY = opt.entry ?? (opt.tsx ? join(ROOT, "src", "bin.ts") : buildService());
const NODE_OPTIONS = opt["node-options"]!.split(" ").filter((a) => a !== "");
const env = await BenchEnv.create(STORES.includes("redis"));
const cursorOf = (): Cursor => ({ next: 0, wrapped: 0 });
let runSerial = 0;

// The soak needs only the 5,000 tokens it cycles over (and one of them as the hot token).
const POOLS = opt.soak
  ? { pool: SOAK_POOL, warm: 0, burst: 0, cp: 0 }
  : {
      pool: SIZE.pool,
      warm: SIZE.warmPool,
      burst: 500,
      cp: HAS_CREDENTIAL_PROVIDER ? SIZE.uncached + SIZE.warm : 0,
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
 * requests until two rounds in a row agree within 10% (at most 8), then hot requests. Node needs
 * several thousand requests before its throughput settles; measuring earlier understates it by half.
 */
async function warmUp(url: string): Promise<void> {
  const cursor = cursorOf();
  let previous = 0;
  for (let round = 0; round < 8; round++) {
    const r = await runLoad({
      url,
      connections: C,
      amount: SIZE.warm,
      maxSeconds: 30,
      requests: uncachedRequests(warmPool, `warm${++runSerial}`, cursor),
    });
    if (round >= 1 && Math.abs(r.rps - previous) <= 0.1 * previous) break;
    previous = r.rps;
  }
  await runLoad({
    url,
    connections: C,
    amount: SIZE.warm * 2,
    maxSeconds: 30,
    requests: hotRequests(warmPool[0]!),
  });
}

/** A load result with the CPU time the process under test spent on it. */
interface Measured {
  load: LoadResult;
  /** CPU of the process tree under test during the load, all threads, seconds. */
  cpuSeconds: number;
}

/** The two references, measured right before a scenario so both see the same machine load. */
async function references(): Promise<{ floor: FloorResult; ref: Measured }> {
  const floor = await env.floor(
    pool.slice(0, 2_000).map((t) => t.token),
    SIZE.floor,
    C,
  );
  const reference = await env.reference(warmUp);
  const cpu0 = treeCpuSeconds(reference.child.pid);
  const load = await runLoad({
    url: reference.url,
    connections: C,
    amount: SIZE.uncached,
    maxSeconds: MAX_SECONDS,
    requests: uncachedRequests(pool, `ref${++runSerial}`, cursorOf()),
  });
  return { floor, ref: { load, cpuSeconds: treeCpuSeconds(reference.child.pid) - cpu0 } };
}

type Profile = ReturnType<typeof summariseProfiles>;

/**
 * Starts a fresh service, warms it (unless `warm` is false), runs `body` as the measured phase (CPU
 * time and, with --profile on one process, a CPU profile of exactly that phase), reads its peak RSS
 * and stops it.
 */
async function withService<T>(
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
    entry: ENTRY,
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

async function scenarioRow(row: string, store: StoreKind, workers: number): Promise<Row> {
  log(`${row} / ${store} / ${workers} worker(s)...`);
  const scenario = REVIEW_ROWS[row] ?? row;
  const api = REVIEW_ROWS[row] ? await env.apiServer() : undefined;
  const reviews0 = api?.reviews() ?? 0;
  const cluster = api
    ? { verification: "both", apiServer: { url: api.url }, review: { cacheTtlSeconds: 10, timeoutMs: 2000 } }
    : undefined;
  const { floor, ref } = await references();
  const cursor = cursorOf();
  const name = `${row}-${store}-w${workers}`;
  // The credential-provider path gets its own warm-up on top of the common one (pool tokens 0..warm).
  const cpCursor: Cursor = { next: SIZE.warm, wrapped: 0 };
  const warm =
    scenario === "credential-provider"
      ? (url: string) =>
          runLoad({
            url,
            connections: C,
            amount: SIZE.warm,
            maxSeconds: 30,
            requests: credentialProviderRequests(cpPool.slice(0, SIZE.warm), cursorOf()),
          }).then(() => undefined)
      : true;
  const measured = await withService(
    store,
    workers,
    name,
    warm,
    async (svc) => {
      const base = { url: svc.url, connections: C, maxSeconds: MAX_SECONDS };
      switch (scenario) {
        case "uncached":
          return runLoad({
            ...base,
            amount: SIZE.uncached,
            requests: uncachedRequests(pool, `${name}-${++runSerial}`, cursor),
          });
        case "hot":
          return runLoad({ ...base, amount: SIZE.hot, requests: hotRequests(pool[0]!) });
        case "pull-burst":
          // 50 pods at a time: autocannon gives each connection an equal share of `amount`, and a share
          // must be whole pods (3 requests each) so that every pod asks for its 3 repositories exactly once.
          return runLoad({
            ...base,
            connections: BURST_CONCURRENCY,
            amount: burstPods.length * 3,
            requests: pullBurstRequests(burstPods, cursor),
          });
        case "credential-provider":
          return runLoad({
            ...base,
            amount: SIZE.uncached,
            requests: credentialProviderRequests(cpPool, cpCursor),
          });
        default:
          throw new Error(`unknown scenario ${scenario}`);
      }
    },
    {},
    cluster,
  );
  if (api)
    log(`  ${api.reviews() - reviews0} TokenReviews served by the stand-in API server (warm-up included)`);
  return {
    scenario: row,
    store,
    workers,
    load: measured.result,
    cpuSeconds: measured.cpuSeconds,
    peakRssMiB: measured.peakRssMiB,
    floor,
    ref,
    repeats: cursor.wrapped + cpCursor.wrapped,
    ...(measured.profile ? { profile: measured.profile } : {}),
  };
}

/** p99 of uncached requests paced at half the rate the same set-up sustained closed-loop. */
async function halfRate(store: StoreKind, maxRps: number) {
  const rate = Math.max(1, Math.floor(maxRps / 2));
  const amount = Math.min(pool.length - C, rate * SIZE.halfRateSeconds);
  log(`uncached at half the maximum (${rate} req/s) / ${store}...`);
  const { result } = await withService(store, 1, `half-rate-${store}`, true, async (svc) =>
    runPaced(
      {
        url: svc.url,
        connections: C,
        amount,
        maxSeconds: MAX_SECONDS,
        requests: uncachedRequests(pool, `half${++runSerial}`, cursorOf()),
      },
      rate,
    ),
  );
  return { store, rate, load: result };
}

/** 1,000 concurrent requests whose tokens carry a `kid` the instance has not seen: JWKS fetches. */
async function storm(store: StoreKind, workers: number) {
  log(`unknown-kid storm / ${store} / ${workers} worker(s)...`);
  const { result } = await withService(
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
        requests: uncachedRequests(tokens, `storm${runSerial}`, cursorOf()),
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
  return { store, workers, ...result };
}

/** The soak: 100k requests filling the caches to their bounds, then 900k hot+mixed; RSS every 100k. */
async function soak(store: StoreKind, total: number) {
  const chunk = 100_000;
  const soakPool = pool.slice(0, SOAK_POOL);
  log(`soak / ${store}: ${total.toLocaleString("en-US")} requests...`);
  const { result } = await withService(store, 1, `soak-${store}`, false, async (svc) => {
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
          ? uncachedRequests(soakPool, `soak${++runSerial}`, fill)
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
  return { store, samples: result };
}

// ---- the run -------------------------------------------------------------------------------------------
const startedAt = new Date().toISOString();
const load0 = loadavg();
const rows: Row[] = [];
const halfRates: Awaited<ReturnType<typeof halfRate>>[] = [];
const storms: Awaited<ReturnType<typeof storm>>[] = [];
const soaks: Awaited<ReturnType<typeof soak>>[] = [];
try {
  if (opt.soak) {
    for (const store of STORES) soaks.push(await soak(store, Number(opt["soak-requests"])));
  } else {
    const all = [
      "uncached",
      "hot",
      "pull-burst",
      ...(HAS_CREDENTIAL_PROVIDER ? ["credential-provider"] : []),
      "review-uncached",
      "review-hot",
    ];
    const scenarios = all.filter(want);
    for (const store of STORES) for (const s of scenarios) rows.push(await scenarioRow(s, store, 1));
    if (WORKERS > 1) {
      // Both stores: with Redis the workers share caches, JWKS and limits, but redis-server takes its
      // share of the same cores; with memory each worker keeps its own.
      for (const store of STORES) {
        for (const s of ["uncached", "hot"].filter(want)) rows.push(await scenarioRow(s, store, WORKERS));
      }
    }
    if (want("credential-provider") && !HAS_CREDENTIAL_PROVIDER) {
      log("credential-provider: src/routes/credential-provider.ts does not exist yet; scenario skipped");
    }
    if (want("half-rate")) {
      for (const store of STORES) {
        const max = rows.find((r) => r.scenario === "uncached" && r.store === store && r.workers === 1);
        if (max) halfRates.push(await halfRate(store, max.load.rps));
      }
    }
    if (want("storm")) {
      for (const store of STORES) storms.push(await storm(store, 1));
      if (WORKERS > 1 && STORES.includes("redis")) storms.push(await storm("redis", WORKERS));
    }
  }
} finally {
  await env.close();
}

// ---- the report ----------------------------------------------------------------------------------------
const out: string[] = [];
const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), Node ${process.version}, load average ${load0[0]!.toFixed(2)} at start, ${loadavg()[0]!.toFixed(2)} at end`;
out.push(`registry-token-exchange benchmark, ${startedAt}`, machine);
out.push(
  `${C} connections; service log level ${opt["log-level"]}; rate limiter off; each row: floor and reference measured just before it`,
  "",
);
if (rows.length > 0) {
  const us = (cpuSeconds: number, requests: number) => (1e6 * cpuSeconds) / Math.max(1, requests);
  out.push(
    formatTable(
      [
        "scenario",
        "store",
        "workers",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "peak RSS MiB",
        "CPU us/req",
        "floor req/s",
        "ref req/s",
        "ref CPU us/req",
        "gen CPU us/req",
        "x floor",
        "x ref",
      ],
      rows.map((r) => [
        r.scenario,
        r.store,
        r.workers,
        r.load.requests,
        r.load.rps,
        r.load.p50,
        r.load.p99,
        r.load.errors,
        r.peakRssMiB,
        us(r.cpuSeconds, r.load.requests),
        r.floor.rps,
        r.ref.load.rps,
        us(r.ref.cpuSeconds, r.ref.load.requests),
        us(r.load.generatorCpuSeconds, r.load.requests),
        r.load.rps / r.floor.rps,
        r.load.rps / r.ref.load.rps,
      ]),
    ),
  );
  const refs = rows.map((r) => r.ref.load.rps);
  const floors = rows.map((r) => r.floor.rps);
  const spread = (xs: number[]) =>
    `${Math.round(Math.min(...xs))}-${Math.round(Math.max(...xs))} req/s (spread ${((100 * (Math.max(...xs) - Math.min(...xs))) / Math.min(...xs)).toFixed(0)}%)`;
  out.push("", `references across the run: floor ${spread(floors)}; reference server ${spread(refs)}`);
  const r0 = rows[0]!;
  out.push(
    `reference server: p50 ${r0.ref.load.p50} ms, p99 ${r0.ref.load.p99} ms; crypto floor: p50 ${r0.floor.p50} ms, p99 ${r0.floor.p99} ms, ${us(r0.floor.cpuSeconds, r0.floor.ops).toFixed(0)} CPU us per verify+sign (first row)`,
  );
  const repeats = rows.filter((r) => r.repeats > 0);
  if (repeats.length > 0)
    out.push(
      `WARNING: pool exhausted, repeated tokens: ${repeats.map((r) => `${r.scenario}/${r.store}: ${r.repeats}`).join(", ")}`,
    );
}
if (halfRates.length > 0) {
  out.push(
    "",
    "uncached, paced at half the maximum sustained rate, spread over 25 staggered autocannon instances (target: p99 <= 10 ms)",
  );
  out.push(
    formatTable(
      ["store", "rate req/s", "requests", "achieved req/s", "p50 ms", "p99 ms", "max ms", "errors"],
      halfRates.map((h) => [
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
      ["store", "workers", "requests", "2xx", "JWKS fetches", "discovery fetches", "seconds"],
      storms.map((s) => [
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
  out.push("", `soak / ${s.store}: first 100k fill the caches (distinct scopes), then hot+mixed`);
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
      sizes: SIZE,
      rows,
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
