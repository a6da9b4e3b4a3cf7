/**
 * The service as a real child process (`src/bin.ts` through tsx), for tests that need signals, real
 * sockets or start-up output: its output collected as text, a wait for a line, and a cleanup that kills it.
 */
import { type ChildProcess, spawn } from "node:child_process";

/** A running `registry-token-exchange` process. */
export interface ServeProcess {
  child: ChildProcess;
  /** Everything it has written so far (stdout, and stderr unless `stderr: false`). */
  output: () => string;
  /**
   * Resolves once `text` has appeared `count` times (default 1) in {@link output}.
   * @throws {Error} after `timeoutMs` (default 30 s), with the output so far
   */
  waitFor: (text: string, count?: number, timeoutMs?: number) => Promise<void>;
}

/** Options of {@link spawnServe}. */
export interface SpawnServeOptions {
  /** Environment of the child (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Collect stderr too (default true). */
  stderr?: boolean;
  /** Where to register the kill (SIGKILL, resolved once it has exited), e.g. an `afterEach` list. */
  cleanup?: { push: (fn: () => Promise<void>) => unknown };
}

/**
 * Starts `node --import tsx src/bin.ts ...args` from the repository root (the tests' working directory).
 * @param args the CLI arguments, e.g. `["serve", "--config", file]`
 */
export function spawnServe(args: readonly string[], options: SpawnServeOptions = {}): ServeProcess {
  const child = spawn(process.execPath, ["--import", "tsx", "src/bin.ts", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: options.env ?? process.env,
  });
  options.cleanup?.push(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      }),
  );
  let out = "";
  child.stdout!.on("data", (d) => {
    out += String(d);
  });
  if (options.stderr !== false) {
    child.stderr!.on("data", (d) => {
      out += String(d);
    });
  }
  const waitFor = async (text: string, count = 1, timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs;
    while (out.split(text).length - 1 < count) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for "${text}"; output:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, output: () => out, waitFor };
}
