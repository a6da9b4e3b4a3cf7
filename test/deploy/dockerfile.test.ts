/**
 * The Dockerfile cannot be built here (no Docker engine), so its properties are checked by parsing it
 * (dockerfile-ast): multi-stage on node:24, `npm ci` only, production dependencies only in the final
 * stage, a non-root numeric user, a node-based HEALTHCHECK, every COPY source present and not excluded by
 * .dockerignore, and an ENTRYPOINT that is exactly what `npm run build` produces (built here for real).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  type Copy,
  DockerfileParser,
  type From,
  type Instruction,
  type JSONInstruction,
} from "dockerfile-ast";
import { describe, expect, it } from "vitest";

const root = new URL("../..", import.meta.url).pathname;
const dockerfile = DockerfileParser.parse(readFileSync(join(root, "Dockerfile"), "utf8"));
const ignored = readFileSync(join(root, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

/** ARG defaults declared before the first FROM, for resolving `${NODE_IMAGE}`. */
const args = new Map(
  dockerfile
    .getInitialARGs()
    .map((a) => [a.getProperty()?.getName() ?? "", a.getProperty()?.getValue() ?? ""] as const),
);
const resolve = (s: string) => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a, b) => args.get(a ?? b) ?? "");

interface Stage {
  from: From;
  name: string | null;
  image: string;
  instructions: Instruction[];
}

const stages: Stage[] = (() => {
  const out: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === "FROM") {
      const from = instruction as From;
      out.push({ from, name: from.getBuildStage(), image: resolve(from.getImage() ?? ""), instructions: [] });
    } else out.at(-1)?.instructions.push(instruction);
  }
  return out;
})();
const final = stages.at(-1)!;
const of = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.getKeyword() === keyword);
const jsonArgs = (i: Instruction) => (i as JSONInstruction).getJSONStrings().map((s) => s.getJSONValue());

describe("Dockerfile", () => {
  it("is multi-stage on node 24", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.image).toMatch(/^node:24(-bookworm-slim|-alpine[0-9.]*)?$/);
    expect(new Set(stages.map((s) => s.name)).size).toBe(stages.length);
  });

  it("installs with npm ci only, and builds with npm run build", () => {
    const runs = stages.flatMap((s) => of(s, "RUN").map((r) => r.getArgumentsContent() ?? ""));
    for (const run of runs) {
      expect(run, run).not.toMatch(/\bnpm\s+(install|i|add)\b/);
      expect(run, run).not.toMatch(/\byarn\b|\bpnpm\b/);
    }
    expect(runs.some((r) => /\bnpm ci\b/.test(r) && !/--omit=dev/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm run build\b/.test(r))).toBe(true);
  });

  it("gives the final stage production dependencies only, and no toolchain or sources", () => {
    const copies = of(final, "COPY") as Copy[];
    const fromStage = (c: Copy) => c.getFromFlag()?.getValue();
    const modules = copies.find((c) => (c.getArgumentsContent() ?? "").includes("node_modules"));
    expect(modules).toBeDefined();
    const depsStage = stages.find((s) => s.name === fromStage(modules!));
    expect(depsStage, "node_modules comes from another stage").toBeDefined();
    const depsRuns = of(depsStage!, "RUN").map((r) => r.getArgumentsContent() ?? "");
    expect(depsRuns.some((r) => /\bnpm ci\b.*--omit=dev/.test(r))).toBe(true);
    const sources = copies
      .filter((c) => !fromStage(c))
      .flatMap((c) => (c.getArgumentsContent() ?? "").split(/\s+/).slice(0, -1));
    expect(sources.sort()).toEqual(["openapi", "package.json"]);
    expect(
      of(final, "RUN")
        .map((r) => r.getArgumentsContent())
        .join("\n"),
    ).not.toMatch(/\bnpm\b/);
  });

  it("runs as a numeric non-root user", () => {
    const users = of(final, "USER");
    expect(users).toHaveLength(1);
    const user = users[0]!.getArgumentsContent() ?? "";
    const [uid, gid] = user.split(":");
    expect(uid).toMatch(/^\d+$/);
    expect(Number(uid)).toBeGreaterThan(0);
    if (gid !== undefined) expect(Number(gid)).toBeGreaterThan(0);
  });

  it("owns only the local-mode state folder (read-only root file system)", () => {
    const runs = of(final, "RUN")
      .map((r) => r.getArgumentsContent() ?? "")
      .join("\n");
    const uid = (of(final, "USER")[0]!.getArgumentsContent() ?? "").split(":")[0];
    expect(runs).toMatch(new RegExp(`chown ${uid}(:\\d+)? /var/lib/registry-token-exchange`));
    expect(of(final, "VOLUME")).toHaveLength(0);
  });

  it("checks health with node against /healthz (no curl in slim images)", () => {
    const checks = of(final, "HEALTHCHECK");
    expect(checks).toHaveLength(1);
    const command = checks[0]!.getArgumentsContent() ?? "";
    expect(command).toMatch(/^CMD \["node"/);
    expect(command).toContain("/healthz");
    expect(command).not.toMatch(/\b(curl|wget)\b/);
    expect(of(final, "EXPOSE").map((e) => e.getArgumentsContent())).toEqual(["8080"]);
  });

  it("has ENTRYPOINT node dist/bin.js and CMD serve --config", () => {
    expect(jsonArgs(of(final, "ENTRYPOINT")[0]!)).toEqual(["node", "dist/bin.js"]);
    expect(jsonArgs(of(final, "CMD")[0]!)).toEqual([
      "serve",
      "--config",
      "/etc/registry-token-exchange/config.yaml",
    ]);
    expect(of(final, "WORKDIR").map((w) => w.getArgumentsContent())).toEqual(["/app"]);
  });

  it("copies only files that exist and that .dockerignore does not exclude", () => {
    const isIgnored = (p: string) => ignored.some((g) => p === g || p.startsWith(`${g}/`));
    for (const stage of stages) {
      for (const copy of of(stage, "COPY") as Copy[]) {
        if (copy.getFromFlag()) continue;
        const parts = (copy.getArgumentsContent() ?? "").split(/\s+/);
        for (const src of parts.slice(0, -1)) {
          expect(existsSync(join(root, src)), `COPY ${src}`).toBe(true);
          expect(isIgnored(src), `COPY ${src} is excluded by .dockerignore`).toBe(false);
        }
      }
    }
    for (const heavy of ["node_modules", "dist", ".git", ".local"]) expect(ignored).toContain(heavy);
  });

  it("runs what `npm run build` produces: dist/bin.js", { timeout: 120_000 }, () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
      bin: Record<string, string>;
    };
    expect(pkg.scripts.build).toBe("tsc -p tsconfig.build.json");
    expect(Object.values(pkg.bin)).toContain("dist/bin.js");
    // Build for real, into a throw-away folder next to dist/ (so node_modules and ../package.json
    // resolve as they do in the image), and run the entry point.
    const out = mkdtempSync(join(root, ".dockerfile-test-"));
    try {
      execFileSync(join(root, "node_modules/.bin/tsc"), ["-p", "tsconfig.build.json", "--outDir", out], {
        cwd: root,
        stdio: "pipe",
      });
      expect(existsSync(join(out, "bin.js"))).toBe(true);
      const version = execFileSync(process.execPath, [join(out, "bin.js"), "--version"], {
        encoding: "utf8",
      });
      // `--version` names the package version (read from package.json beside dist/), Node.js and platform.
      const pkgVersion = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version as string;
      expect(version.trim()).toBe(
        `registry-token-exchange ${pkgVersion} (node ${process.version}, ${process.platform}/${process.arch})`,
      );
      // The runtime also needs openapi/openapi.yaml next to dist/ (COPY openapi): it loads at start-up.
      const check = execFileSync(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `import(${JSON.stringify(join(out, "routes/openapi.js"))}).then((m) => console.log(m.loadOpenApiDocument().openapi))`,
        ],
        { encoding: "utf8" },
      );
      expect(check.trim()).toBe("3.1.0");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
