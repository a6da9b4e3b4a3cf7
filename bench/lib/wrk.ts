/**
 * The closed-loop load generator: [wrk](https://github.com/wg/wrk) (4.1, C with LuaJIT scripts) driven
 * by `bench/lib/wrk.lua` over a file of pre-built requests. autocannon (a Node process) burns 110-220 us
 * of CPU per request on the same two cores as the service; wrk ~15-30 us.
 *
 * wrk runs for a duration (`-d`), not a count, so the script counts: each thread sends its share of
 * `amount` (for an uncached plan: its own disjoint slice of the requests, never one twice), writes
 * `wrk-thread-done` to stderr and stops; once every thread has, wrk is ended with SIGINT (it then
 * reports, its duration ending there). `maxSeconds` is `-d`. wrk's CPU time is read from /proc: it
 * runs under a `sh` that ignores SIGINT and prints its waited-for children's CPU (`cutime`, `cstime`)
 * after wrk exits.
 */
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ClosedSpec, LoadResult } from "./load.js";
import { ROOT } from "./procs.js";

/** One request, ready to send. Fields must hold no tab and no newline (the file format). */
export interface PlannedRequest {
  method: "GET" | "POST";
  /** Path and query. */
  path: string;
  /** The `Authorization` header, if any. */
  authorization?: string | undefined;
  /** The `Content-Type` header, if any (with a body). */
  contentType?: string | undefined;
  body?: string | undefined;
}

/** True when `wrk` is on the PATH (`wrk -v` prints its version and exits 1). */
export const HAS_WRK = (() => {
  const r = spawnSync("wrk", ["-v"], { encoding: "utf8" });
  return r.error === undefined && `${r.stdout}${r.stderr}`.includes("wrk");
})();

/** A closed-loop wrk run: a {@link ClosedSpec} and a folder for the request file. */
export interface WrkSpec extends ClosedSpec {
  /** A folder for the request file. */
  dir: string;
  /** wrk threads (`-t`), default 1: one thread keeps up with the service here at ~15-30 us/request. */
  threads?: number | undefined;
}

/** The JSON line `wrk.lua`'s `done()` prints. */
interface WrkSummary {
  requests: number;
  duration_us: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  max_us: number;
  /** Answers with a status >= 400 (wrk counts no other non-2xx). */
  status_errors: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
}

let serial = 0;

/** Writes `plan` in the line format `wrk.lua` reads (tab-separated; empty fields left out). */
function writePlan(dir: string, plan: PlannedRequest[]): string {
  const file = join(dir, `wrk-requests-${++serial}.tsv`);
  const lines = plan.map(
    (r) => `${r.method}\t${r.path}\t${r.authorization ?? ""}\t${r.contentType ?? ""}\t${r.body ?? ""}\n`,
  );
  writeFileSync(file, lines.join(""));
  return file;
}

/**
 * Runs wrk closed-loop and resolves its figures as a {@link LoadResult} (`acP99` is wrk's p99).
 * @throws {Error} when wrk fails or prints no summary
 */
export function runWrk(spec: WrkSpec): Promise<LoadResult> {
  const threads = spec.threads ?? 1;
  const file = writePlan(spec.dir, spec.plan);
  const args = [
    `-t${threads}`,
    `-c${Math.max(threads, Math.min(spec.connections, spec.amount))}`,
    `-d${Math.ceil(spec.maxSeconds)}s`,
    "--timeout",
    "10s",
    "-s",
    join(ROOT, "bench", "lib", "wrk.lua"),
    spec.url,
  ];
  // `trap "" INT`: SIGINT (sent to the process group) ends wrk, which handles it, not the shell.
  const script =
    'trap "" INT; wrk "$@"; s=$?; echo; echo "generator-cpu-ticks $(cut -d" " -f16,17 /proc/$$/stat)"; exit $s';
  return new Promise((resolve, reject) => {
    const proc = spawn("sh", ["-c", script, "sh", ...args], {
      cwd: ROOT,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        BENCH_REQUESTS: file,
        BENCH_AMOUNT: String(spec.amount),
        BENCH_THREADS: String(threads),
        BENCH_CYCLE: spec.cycle ? "1" : "0",
      },
    });
    let out = "";
    let err = "";
    let done = 0;
    let interrupted = false;
    proc.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    proc.stderr.setEncoding("utf8").on("data", (c: string) => {
      err += c;
      done += c.split("wrk-thread-done").length - 1;
      if (done >= threads && !interrupted) {
        interrupted = true;
        process.kill(-proc.pid!, "SIGINT");
      }
    });
    const killer = setTimeout(() => process.kill(-proc.pid!, "SIGKILL"), (spec.maxSeconds + 30) * 1000);
    proc.once("exit", (code) => {
      clearTimeout(killer);
      const json = out.split("\n").find((l) => l.startsWith('{"requests"'));
      const ticks = /generator-cpu-ticks (\d+) (\d+)/.exec(out);
      if (code !== 0 || !json || !ticks) {
        reject(new Error(`wrk failed (exit ${code}):\n${out}\n${err.slice(-2000)}`));
        return;
      }
      const s = JSON.parse(json) as WrkSummary;
      const seconds = s.duration_us / 1e6;
      const socketErrors = s.connect + s.read + s.write + s.timeout;
      resolve({
        generator: "wrk",
        requests: s.requests,
        ok: s.requests - s.status_errors,
        errors: s.status_errors + socketErrors,
        statuses: { "<400": s.requests - s.status_errors, ">=400": s.status_errors },
        seconds,
        rps: s.requests / seconds,
        p50: s.p50_us / 1000,
        p90: s.p90_us / 1000,
        p99: s.p99_us / 1000,
        max: s.max_us / 1000,
        acP99: s.p99_us / 1000,
        timedOut: !interrupted,
        // USER_HZ ticks (100 a second), like treeCpuSeconds in procs.ts.
        generatorCpuSeconds: (Number(ticks[1]) + Number(ticks[2])) / 100,
      });
    });
  });
}
