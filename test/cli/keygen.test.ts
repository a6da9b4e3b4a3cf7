/**
 * `keygen` refuses to overwrite a key (a new key breaks every registry that trusts the old certificate);
 * usage errors exit 2.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "rte-keygen-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", "src/bin.ts", ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("keygen", () => {
  it("writes a key and certificate, then refuses to overwrite them without --force", async () => {
    const first = await cli("keygen", "--out", dir);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^kid ([A-Z2-7]{4}:){11}[A-Z2-7]{4} \(ES256\)$/m);
    const key = readFileSync(join(dir, "signing-key.pem"), "utf8");
    const again = await cli("keygen", "--out", dir);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe(
      `config error: keygen: signing-key.pem, signing-cert.pem already in ${dir}; refusing to overwrite (use --force)\n`,
    );
    expect(readFileSync(join(dir, "signing-key.pem"), "utf8")).toBe(key);
    const forced = await cli("keygen", "--out", dir, "--force");
    expect(forced.code).toBe(0);
    expect(readFileSync(join(dir, "signing-key.pem"), "utf8")).not.toBe(key);
  });

  it("a usage error exits 2, --help exits 0", async () => {
    expect((await cli("check-config")).code).toBe(2);
    expect((await cli("no-such-command")).code).toBe(2);
    expect((await cli("--help")).code).toBe(0);
  });
});
