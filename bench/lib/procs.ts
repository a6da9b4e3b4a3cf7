/**
 * The processes under test: the service (the real CLI, `serve --config FILE [--workers N]`), the minimal
 * reference server and the crypto floor, each a child process so its memory can be read from /proc and
 * it never shares an event loop with the load generator. Everything listens on 127.0.0.1 only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (bench/lib/../..). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Compiles the service (`tsc -p tsconfig.build.json`, what `npm run build` runs) into `dist/`, so the
 * service is measured as it runs in production (`node dist/bin.js`), not under the tsx loader, which
 * adds tens of MiB of RSS. tsc emits even when the tree has type errors (other work in progress): those
 * are reported, not fatal.
 * @returns the entry point, `dist/bin.js`
 */
export function buildService(): string {
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 180_000,
  });
  const entry = join(ROOT, "dist", "bin.js");
  if (!existsSync(entry)) throw new Error(`build failed:\n${r.stdout}${r.stderr}`);
  if (r.status !== 0)
    process.stderr.write(`warning: tsc reported errors (output still emitted):\n${r.stdout}`);
  return entry;
}

/** A child process under test. */
export interface Child {
  proc: ChildProcess;
  pid: number;
  /** Last lines it wrote to stderr (for error messages). */
  stderr: () => string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop: (graceMs?: number) => Promise<void>;
}

/**
 * Starts `node <script> ...args` from the repository root (with the tsx loader for a `.ts` script). Its
 * stdout (the service's pino log lines) goes to /dev/null: written for real, as in production, not kept.
 */
export function startNode(script: string, args: string[], nodeArgs: string[] = []): Child {
  const loader = script.endsWith(".ts") ? ["--import", "tsx"] : [];
  const proc = spawn(process.execPath, [...nodeArgs, ...loader, script, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let tail = "";
  proc.stderr?.setEncoding("utf8");
  proc.stderr?.on("data", (chunk: string) => {
    tail = (tail + chunk).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  return {
    proc,
    pid: proc.pid!,
    stderr: () => tail,
    stop: async (graceMs = 5_000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** GET `url` on a fresh connection (so cluster workers are reached in turn); resolves the status. */
function getStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { agent: false, timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", () => resolve(0));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/**
 * Waits until `url` answers 200 `times` times in a row (one per worker, and then some).
 * @throws {Error} with the child's stderr when it exits or does not get ready within `timeoutMs`
 */
export async function waitReady(child: Child, url: string, times = 1, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let streak = 0;
  while (streak < times) {
    if (child.proc.exitCode !== null) throw new Error(`${url}: process exited\n${child.stderr()}`);
    if (Date.now() > deadline) throw new Error(`${url}: not ready after ${timeoutMs} ms\n${child.stderr()}`);
    if ((await getStatus(url)) === 200) streak++;
    else {
      streak = 0;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Runs a node script to completion and parses the JSON it prints last on stdout. */
export function runNodeJson<T>(script: string, args: string[], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ["--import", "tsx", script, ...args], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    proc.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    proc.stderr.setEncoding("utf8").on("data", (c: string) => (err = (err + c).slice(-4000)));
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      const last = out.trim().split("\n").pop() ?? "";
      try {
        if (code !== 0) throw new Error(`exit ${code}`);
        resolve(JSON.parse(last) as T);
      } catch (e) {
        reject(new Error(`${script}: ${(e as Error).message}\n${err}`));
      }
    });
  });
}

/** A process and its descendants (cluster workers), from /proc. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!;
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        const kids = readFileSync(`/proc/${p}/task/${t}/children`, "utf8").trim();
        if (kids !== "") out.push(...kids.split(" ").map(Number));
      } catch {
        // the task ended meanwhile
      }
    }
  }
  return out;
}

/** `VmRSS` and `VmHWM` (peak resident set) of one process, bytes; zeros once it has exited. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0);
    return { rss: kb("VmRSS") * 1024, hwm: kb("VmHWM") * 1024 };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** Memory of a process tree: current RSS and peak (VmHWM) summed over the primary and its workers. */
export function treeMemory(pid: number): { rss: number; hwm: number } {
  let rss = 0;
  let hwm = 0;
  for (const p of processTree(pid)) {
    const m = memoryOf(p);
    rss += m.rss;
    hwm += m.hwm;
  }
  return { rss, hwm };
}

/** Current RSS of each process of a tree (the primary first, then its workers), bytes. */
export function processTreeRss(pid: number): number[] {
  return processTree(pid).map((p) => memoryOf(p).rss);
}

/** Bytes to MiB, one decimal. */
export function mib(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}

/** Clock ticks per second of /proc/<pid>/stat times (Linux: USER_HZ, 100 everywhere in practice). */
const TICKS_PER_SECOND = 100;

/** CPU time used so far by a process tree, all threads, user + system, seconds. */
export function treeCpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited meanwhile
    }
  }
  return ticks / TICKS_PER_SECOND;
}
