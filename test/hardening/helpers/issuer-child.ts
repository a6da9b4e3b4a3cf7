/**
 * Drives `issuer-process.ts`: a cluster's discovery + JWKS endpoint as a real child process on a fixed
 * port that tests start, kill, freeze (SIGSTOP) and thaw (SIGCONT), and whose answers they can turn into
 * garbage. The {@link LocalIssuer} held here has the same keys, so the test mints tokens the child's JWKS
 * verifies.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { LocalIssuer } from "../../../src/local/issuer.js";
import { freePort, ManagedProcess, type TempDir, tempDir, waitUntil } from "../../e2e/helpers/process.js";

const SCRIPT = fileURLToPath(new URL("./issuer-process.ts", import.meta.url));

/** What the child answers the JWKS with. */
export type IssuerMode = "ok" | "garbage" | "html";

/** A cluster issuer in its own process. */
export class IssuerProcess {
  readonly issuer: LocalIssuer;
  readonly port: number;
  readonly #dir: TempDir;
  #proc: ManagedProcess | undefined;
  #starts = 0;

  private constructor(issuer: LocalIssuer, port: number, dir: TempDir) {
    this.issuer = issuer;
    this.port = port;
    this.#dir = dir;
  }

  /** Picks a free port and creates the issuer (URL `http://127.0.0.1:<port>`); nothing runs yet. */
  static async create(): Promise<IssuerProcess> {
    const port = await freePort();
    const dir = tempDir("issuer");
    const issuer = new LocalIssuer(`http://127.0.0.1:${port}`);
    issuer.save(join(dir.path, "issuer.json"));
    const p = new IssuerProcess(issuer, port, dir);
    p.mode("ok");
    return p;
  }

  /** The issuer URL (`iss`, and where discovery lives). */
  get url(): string {
    return this.issuer.issuer;
  }

  /** Sets what the JWKS answers from the next request on. */
  mode(mode: IssuerMode): void {
    writeFileSync(join(this.#dir.path, "mode"), mode);
  }

  /** Starts the process (again) and waits until it listens. */
  async start(): Promise<void> {
    this.#starts++;
    const proc = new ManagedProcess(
      "issuer",
      process.execPath,
      [
        "--import",
        "tsx",
        SCRIPT,
        join(this.#dir.path, "issuer.json"),
        String(this.port),
        join(this.#dir.path, "mode"),
      ],
      join(this.#dir.path, `issuer-${this.#starts}.log`),
    );
    this.#proc = proc;
    await waitUntil(`issuer on port ${this.port}`, async () => proc.log().includes("listening"), {
      proc,
      timeoutMs: 20_000,
      intervalMs: 50,
    });
  }

  /** Kills the process at once (SIGKILL): connections are refused from now on. */
  async kill(): Promise<void> {
    const proc = this.#proc;
    if (!proc?.running) return;
    this.thaw();
    proc.killNow();
    await proc.exited;
  }

  /** Freezes the process: connections are still accepted by the kernel, nothing is answered. */
  freeze(): void {
    if (this.#proc?.child.pid !== undefined) process.kill(this.#proc.child.pid, "SIGSTOP");
  }

  /** Thaws a frozen process. */
  thaw(): void {
    if (this.#proc?.running && this.#proc.child.pid !== undefined)
      process.kill(this.#proc.child.pid, "SIGCONT");
  }

  /** Paths of the requests the current process has answered (or started to), in order. */
  served(): string[] {
    return (this.#proc?.log(1e7) ?? "")
      .split("\n")
      .filter((l) => l.startsWith("served "))
      .map((l) => l.split(" ")[1]!);
  }

  /** Stops the process and removes its files. */
  async close(): Promise<void> {
    await this.kill();
    this.#dir.remove();
  }
}
