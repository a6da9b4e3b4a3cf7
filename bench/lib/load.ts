/**
 * The load generators. Closed-loop rows run on wrk ({@link runClosed}, `wrk.ts`) when it is installed,
 * else on autocannon; the paced half-rate row, the pull burst, the storm and the soak always run on
 * autocannon (programmatic API: per-connection request sequences and rate control), bounded in count
 * (`amount`) and in time (stopped after `maxSeconds`). Latency is recorded here in microseconds from autocannon's `response` event,
 * because autocannon's own histogram has 1 ms resolution; autocannon's p99 is kept as well, since with a
 * fixed `overallRate` it is corrected for coordinated omission. The duration is timed here too, from the
 * start to the last response: autocannon notices that `amount` is reached only at its next 1 s tick,
 * which would add up to a second of idle time to every run.
 */
import { createHistogram, type RecordableHistogram } from "node:perf_hooks";
import autocannon from "autocannon";
import { HAS_WRK, type PlannedRequest, runWrk } from "./wrk.js";

/** One load run. */
export interface LoadSpec {
  /** Base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Concurrent keep-alive connections. */
  connections: number;
  /** Requests to send in total. */
  amount: number;
  /** Hard stop, seconds. */
  maxSeconds: number;
  /** Requests per second over all connections (open-loop-ish pacing), if set. */
  overallRate?: number | undefined;
  /** The request cycle each connection runs (autocannon `requests`; `setupRequest` may vary them). */
  requests: autocannon.Request[];
}

/** What one load run measured. */
export interface LoadResult {
  /** Which load generator ran it. */
  generator: "autocannon" | "wrk";
  /** Responses received. */
  requests: number;
  /** 2xx responses. */
  ok: number;
  /** Non-2xx responses plus connection errors and timeouts. */
  errors: number;
  /** Count per status code. */
  statuses: Record<string, number>;
  seconds: number;
  /** Responses per second. */
  rps: number;
  /** Latency percentiles of all responses, ms (µs resolution). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** autocannon's p99 of 2xx responses, ms (1 ms resolution; corrected for coordinated omission when paced; the worst instance's when several ran). */
  acP99: number;
  /** True when `maxSeconds` ran out before `amount` responses. */
  timedOut: boolean;
  /** CPU the load generator (this process) spent, seconds: it shares the machine's cores with the server. */
  generatorCpuSeconds: number;
}

/** Where responses are recorded; several autocannon instances can share one (see {@link runPaced}). */
interface Recorder {
  hist: RecordableHistogram;
  statuses: Record<string, number>;
  lastResponse: bigint;
}

function newRecorder(): Recorder {
  return {
    hist: createHistogram({ lowest: 1, highest: 60_000_000, figures: 3 }),
    statuses: {},
    lastResponse: 0n,
  };
}

/** One autocannon run recording into `rec`; resolves autocannon's own result and whether it timed out. */
function drive(spec: LoadSpec, rec: Recorder): Promise<{ result: autocannon.Result; timedOut: boolean }> {
  let timedOut = false;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: spec.url,
        connections: Math.min(spec.connections, spec.amount),
        amount: spec.amount,
        timeout: 10,
        requests: spec.requests,
        ...(spec.overallRate ? { overallRate: spec.overallRate } : {}),
      },
      (err, result) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve({ result, timedOut });
      },
    );
    instance.on("response", (_client, statusCode: number, _bytes: number, responseTime: number) => {
      rec.lastResponse = process.hrtime.bigint();
      rec.statuses[statusCode] = (rec.statuses[statusCode] ?? 0) + 1;
      rec.hist.record(Math.max(1, Math.round(responseTime * 1000)));
    });
    const timer = setTimeout(() => {
      timedOut = true;
      instance.stop();
    }, spec.maxSeconds * 1000);
  });
}

function summarise(
  rec: Recorder,
  started: bigint,
  cpu0: NodeJS.CpuUsage,
  runs: Array<{ result: autocannon.Result; timedOut: boolean }>,
): LoadResult {
  const seconds = Number((rec.lastResponse || process.hrtime.bigint()) - started) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const requests = rec.hist.count;
  const ok = Object.entries(rec.statuses)
    .filter(([s]) => s.startsWith("2"))
    .reduce((n, [, c]) => n + c, 0);
  const ms = (p: number) => (requests ? Math.round(rec.hist.percentile(p)) / 1000 : 0);
  return {
    generator: "autocannon",
    requests,
    ok,
    errors: requests - ok + runs.reduce((n, r) => n + r.result.errors + r.result.timeouts, 0),
    statuses: rec.statuses,
    seconds,
    rps: requests / seconds,
    p50: ms(50),
    p90: ms(90),
    p99: ms(99),
    max: requests ? rec.hist.max / 1000 : 0,
    acP99: Math.max(...runs.map((r) => r.result.latency.p99)),
    timedOut: runs.some((r) => r.timedOut),
    generatorCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

/** Runs one load and resolves its figures. */
export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const rec = newRecorder();
  const started = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const run = await drive(spec, rec);
  return summarise(rec, started, cpu0, [run]);
}

/**
 * Load at a steady `rate` req/s. autocannon's rate limit lets each connection send its per-second quota
 * back to back at every 1 s tick and then wait, so one rate-limited instance loads the server in bursts
 * at full concurrency. Here `slices` instances of 2 connections, each with `rate / slices` req/s, start
 * `1000 / slices` ms apart, so the bursts are small and spread evenly over every second.
 */
export async function runPaced(spec: LoadSpec, rate: number, slices = 25): Promise<LoadResult> {
  const rec = newRecorder();
  const started = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const runs = await Promise.all(
    Array.from({ length: slices }, async (_, i) => {
      await new Promise((r) => setTimeout(r, (i * 1000) / slices));
      return drive(
        {
          ...spec,
          connections: 2,
          amount: Math.floor(spec.amount / slices),
          overallRate: Math.max(2, Math.round(rate / slices)),
        },
        rec,
      );
    }),
  );
  return summarise(rec, started, cpu0, runs);
}

/** Which closed-loop generator this run uses: wrk when installed, unless `forceAutocannon`. */
export function closedLoopGenerator(forceAutocannon: boolean): "wrk" | "autocannon" {
  return HAS_WRK && !forceAutocannon ? "wrk" : "autocannon";
}

/**
 * autocannon requests sending `plan` in order, one entry per request, wrapping around at its end (a hot
 * plan of one request is sent as a static request: autocannon then builds it once).
 */
export function autocannonRequests(plan: PlannedRequest[]): autocannon.Request[] {
  const headers = (r: PlannedRequest) => ({
    ...(r.authorization ? { authorization: r.authorization } : {}),
    ...(r.contentType ? { "content-type": r.contentType } : {}),
  });
  if (plan.length === 1) {
    const r = plan[0]!;
    return [{ method: r.method, path: r.path, headers: headers(r), ...(r.body ? { body: r.body } : {}) }];
  }
  let next = 0;
  return [
    {
      method: "GET",
      setupRequest: (req) => {
        const r = plan[next++ % plan.length]!;
        req.method = r.method;
        req.path = r.path;
        req.headers = headers(r);
        if (r.body) req.body = r.body;
        else delete req.body;
        return req;
      },
    },
  ];
}

/** A closed-loop run over a plan of requests (see {@link runClosed}). */
export interface ClosedSpec {
  url: string;
  connections: number;
  /** Requests to send in all. */
  amount: number;
  maxSeconds: number;
  /** Sent once each in order, or over and over when `cycle` (then usually one request). */
  plan: PlannedRequest[];
  cycle: boolean;
}

/**
 * Closed-loop load (each connection sends its next request when the previous answer arrives) on
 * `generator`: wrk (`wrk.ts`, request file written to `dir`) or autocannon.
 */
export function runClosed(
  spec: ClosedSpec,
  generator: "wrk" | "autocannon",
  dir: string,
): Promise<LoadResult> {
  if (generator === "wrk") return runWrk({ ...spec, dir });
  return runLoad({ ...spec, requests: autocannonRequests(spec.plan) });
}
