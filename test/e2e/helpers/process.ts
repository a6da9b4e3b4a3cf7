/**
 * Process plumbing for the end-to-end suite: free ports, temp dirs, long-running child processes whose
 * output goes to a log file and which are always killed (whole process group), one-shot commands with a
 * timeout, and readiness polling.
 *
 * Every child is spawned `detached` (its own process group) so that killing `-pid` also ends whatever it
 * forked (containerd's shims, for instance). A process `exit` hook kills any child a test forgot, so a
 * crashed or interrupted run leaves nothing behind.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Children still running and temp dirs not yet removed: cleaned up on process exit as a last resort. */
const live = new Set<ManagedProcess>();
const liveDirs = new Set<TempDir>();
/** Process groups of one-shot commands still running (see {@link run}). */
const liveGroups = new Set<number>();
process.once("exit", () => {
  for (const p of live) p.killNow();
  for (const pgid of liveGroups) killGroup(pgid);
  if (!process.env.E2E_KEEP_TMP) for (const d of liveDirs) d.remove();
});

/** SIGKILL to process group `pgid`, ignoring a group that is already gone. */
function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** Environment for client tools: loopback never goes through a proxy. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, NO_PROXY: "127.0.0.1,localhost", no_proxy: "127.0.0.1,localhost", ...extra };
}

/** The binaries of `names` that are not on `PATH` (or not executable). */
export function missingBinaries(names: readonly string[]): string[] {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  return names.filter(
    (name) =>
      !dirs.some((dir) => {
        try {
          accessSync(join(dir, name), constants.X_OK);
          return true;
        } catch {
          return false;
        }
      }),
  );
}

/** A temp directory removed by `remove()` (idempotent). */
export interface TempDir {
  path: string;
  remove: () => void;
}

/** Creates a fresh temp directory `rte-e2e-<label>-XXXXXX` (also removed on process exit). */
export function tempDir(label: string): TempDir {
  const path = mkdtempSync(join(tmpdir(), `rte-e2e-${label}-`));
  const dir: TempDir = {
    path,
    remove: () => {
      liveDirs.delete(dir);
      rmSync(path, { recursive: true, force: true });
    },
  };
  liveDirs.add(dir);
  return dir;
}

/**
 * A free TCP port on 127.0.0.1 (bound, read, released). Another process may grab it before the caller
 * binds it; starters that use it retry with a fresh port when their child exits early.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port assigned"))));
    });
  });
}

/** A long-running child process with its stdout+stderr captured to `logFile`. */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly name: string;
  readonly logFile: string;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  #exitCode: number | string | undefined;

  /**
   * Spawns `command args` in its own process group, stdin closed, output appended to `logFile`.
   * @param name a short name for messages
   */
  constructor(name: string, command: string, args: readonly string[], logFile: string, env = childEnv()) {
    this.name = name;
    this.logFile = logFile;
    const fd = openSync(logFile, "a");
    try {
      this.child = spawn(command, args, { detached: true, stdio: ["ignore", fd, fd], env });
    } finally {
      closeSync(fd);
    }
    live.add(this);
    this.exited = new Promise((resolve) => {
      const done = (code: number | string) => {
        this.#exitCode = code;
        live.delete(this);
        resolve(code);
      };
      this.child.once("exit", (code, signal) => done(code ?? signal ?? "unknown"));
      this.child.once("error", (err) => done(`spawn error: ${err.message}`));
    });
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.#exitCode === undefined;
  }

  /** The captured output so far (the last `maxChars` characters). */
  log(maxChars = 8000): string {
    try {
      const text = readFileSync(this.logFile, "utf8");
      return text.length > maxChars ? `...${text.slice(-maxChars)}` : text;
    } catch {
      return "";
    }
  }

  /** SIGKILL to the whole process group, synchronously (exit hook). */
  killNow(): void {
    if (this.running && this.child.pid !== undefined) killGroup(this.child.pid);
  }

  /** SIGTERM to the process group, SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running || this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, "SIGTERM");
    } catch {
      // already gone
    }
    const timeout = sleep(graceMs).then(() => "timeout" as const);
    if ((await Promise.race([this.exited, timeout])) === "timeout") {
      this.killNow();
      await this.exited;
    }
    // Whatever else is left in the group (a forked helper that ignored SIGTERM).
    killGroup(this.child.pid);
  }
}

/**
 * Polls `check` every `intervalMs` until it returns true, `proc` (if given) exits, or `timeoutMs` passes.
 * @throws {Error} naming `what`, with the process log when it exited or the check never succeeded
 */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  opts: { timeoutMs?: number; intervalMs?: number; proc?: ManagedProcess } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let lastError = "";
  while (Date.now() < deadline) {
    if (opts.proc && !opts.proc.running) {
      throw new Error(
        `${what}: ${opts.proc.name} exited (${await opts.proc.exited}) before it was ready; log:\n${opts.proc.log()}`,
      );
    }
    try {
      if (await check()) return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await sleep(opts.intervalMs ?? 100);
  }
  throw new Error(
    `${what}: not ready after ${opts.timeoutMs ?? 20_000} ms${lastError ? ` (last error: ${lastError})` : ""}${
      opts.proc ? `; ${opts.proc.name} log:\n${opts.proc.log()}` : ""
    }`,
  );
}

/** True once something accepts connections on `target` (a TCP port on 127.0.0.1 or a unix socket path). */
export function canConnect(target: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket =
      typeof target === "number"
        ? createConnection({ host: "127.0.0.1", port: target })
        : createConnection(target);
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** The outcome of a one-shot command. */
export interface RunResult {
  /** Exit code; `null` when killed by a signal (including the timeout). */
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs `command args` to completion (own process group, stdin closed) and collects its output; never
 * throws for a non-zero exit. On timeout the whole group is killed and `timedOut` is set.
 */
export function run(
  command: string,
  args: readonly string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ?? childEnv(),
    });
    const pgid = child.pid;
    if (pgid !== undefined) liveGroups.add(pgid);
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      if (pgid !== undefined) killGroup(pgid);
    }, opts.timeoutMs ?? 30_000);
    const finish = (result: RunResult) => {
      clearTimeout(timer);
      if (pgid !== undefined) liveGroups.delete(pgid);
      resolve(result);
    };
    child.once("error", (err) => {
      finish({ code: null, stdout, stderr: `${stderr}spawn error: ${err.message}`, timedOut });
    });
    child.once("close", (code) => finish({ code, stdout, stderr, timedOut }));
  });
}

/** A one-line summary of a {@link RunResult} for assertion messages. */
export function describeRun(cmd: string, r: RunResult): string {
  return `${cmd} exited ${r.code}${r.timedOut ? " (timed out)" : ""}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}
