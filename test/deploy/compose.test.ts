/**
 * docker-compose.yml (the laptop demo) is wired right, checked by parsing it: the registry advertises the
 * realm at the service's published port and trusts exactly what local mode generates (its `service`,
 * `issuer` and signing certificate, through the shared state volume); Redis is where the service looks;
 * every file mounted exists and every named volume is declared.
 */
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { buildProgram } from "../../src/cli/index.js";
import { type LocalSetup, prepareLocalMode } from "../../src/local/mode.js";

const root = new URL("../..", import.meta.url).pathname;

interface Service {
  build?: string | { context: string; dockerfile?: string };
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  read_only?: boolean;
  tmpfs?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}
const compose = parse(readFileSync(join(root, "docker-compose.yml"), "utf8")) as {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const { services } = compose;
const rte = services["token-exchange"]!;
const registry = services.registry!;
const redis = services.redis!;

/** `host:container` port mappings as numbers. */
function ports(s: Service): Array<{ host: number; container: number }> {
  return (s.ports ?? []).map((p) => {
    const [host, container] = p.split(":").slice(-2).map(Number) as [number, number];
    return { host, container };
  });
}

/** Volume mounts as `{ source, target, readOnly }`. */
function mounts(s: Service): Array<{ source: string; target: string; readOnly: boolean }> {
  return (s.volumes ?? []).map((v) => {
    const [source, target, mode] = v.split(":") as [string, string, string | undefined];
    return { source, target, readOnly: mode === "ro" };
  });
}

/** The value following `flag` in a command. */
function option(command: string[], flag: string): string | undefined {
  const i = command.indexOf(flag);
  return i < 0 ? undefined : command[i + 1];
}

describe("docker-compose.yml", () => {
  let local: LocalSetup;
  const command = rte.command ?? [];
  const stateDir = option(command, "--state-dir")!;
  const port = Number(rte.environment?.PORT ?? 8080);

  beforeAll(async () => {
    // What local mode generates, with the compose file's settings.
    local = await prepareLocalMode(mkdtempSync(join(tmpdir(), "rte-compose-")), rte.environment ?? {}, {
      redisUrl: option(command, "--redis-url"),
    });
  });

  it("has the service, Redis and a distribution registry", () => {
    expect(Object.keys(services).sort()).toEqual(["redis", "registry", "token-exchange"]);
    expect(registry.image).toMatch(/^registry:2(\.\d+)*$/);
    expect(redis.image).toMatch(/^redis:\d/);
    const build = typeof rte.build === "string" ? { context: rte.build } : rte.build!;
    expect(existsSync(join(root, build.context, build.dockerfile ?? "Dockerfile"))).toBe(true);
  });

  it("runs the service in local mode with a state volume and a read-only root file system", () => {
    expect(command.slice(0, 2)).toEqual(["serve", "--local"]);
    // The command line is one the CLI accepts.
    const serve = buildProgram().commands.find((c) => c.name() === "serve")!;
    for (const flag of command.filter((a) => a.startsWith("--"))) {
      expect(
        serve.options.map((o) => o.long),
        flag,
      ).toContain(flag);
    }
    expect(rte.environment?.HOST).toBe("0.0.0.0");
    expect(ports(rte)).toContainEqual({ host: port, container: port });
    expect(mounts(rte)).toContainEqual({ source: "rte-state", target: stateDir, readOnly: false });
    expect(rte.read_only).toBe(true);
    expect(rte.tmpfs).toContain("/tmp");
    // The image makes that folder writable for its user (see the Dockerfile).
    expect(readFileSync(join(root, "Dockerfile"), "utf8")).toContain(stateDir);
  });

  it("points the service at the Redis service", () => {
    const url = new URL(option(command, "--redis-url")!);
    expect(url.protocol).toBe("redis:");
    expect(Object.keys(services)).toContain(url.hostname);
    expect(url.port).toBe("6379");
    expect(redis.healthcheck?.test).toContain("ping");
    expect(local.config.cache.redisUrl).toBe(url.toString());
  });

  it("configures the registry with the realm, service, issuer and certificate local mode uses", () => {
    const configMount = mounts(registry).find((m) => m.target === "/etc/docker/registry/config.yml");
    expect(configMount, "registry config mounted where registry:2 reads it").toBeDefined();
    const configFile = join(root, configMount!.source);
    expect(existsSync(configFile)).toBe(true);
    const config = parse(readFileSync(configFile, "utf8")) as {
      http: { addr: string };
      auth: { token: Record<string, string> };
    };
    const token = config.auth.token;
    const realm = new URL(token.realm!);
    // The realm is what clients on the host call: the service's published port.
    expect(["127.0.0.1", "localhost"]).toContain(realm.hostname);
    expect(Number(realm.port)).toBe(ports(rte).find((p) => p.container === port)!.host);
    expect(realm.pathname).toBe("/token");
    expect(token.service).toBe(local.config.registries[0]!.service);
    expect(token.issuer).toBe(local.config.registries[0]!.issuer);
    // rootcertbundle: local mode's certificate, through the state volume mounted read-only.
    const certMount = mounts(registry).find((m) => m.source === "rte-state");
    expect(certMount).toMatchObject({ readOnly: true });
    expect(dirname(token.rootcertbundle!)).toBe(certMount!.target);
    expect(basename(token.rootcertbundle!)).toBe(basename(local.files.signingCert));
    expect(registry.depends_on?.["token-exchange"]?.condition).toBe("service_healthy");
    const registryPort = Number(config.http.addr.split(":").at(-1));
    expect(ports(registry)).toContainEqual({ host: 5000, container: registryPort });
  });

  it("declares every named volume it mounts", () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const [name, s] of Object.entries(services)) {
      for (const m of mounts(s)) {
        if (m.source.startsWith(".") || m.source.startsWith("/")) {
          expect(existsSync(join(root, m.source)), `${name}: ${m.source}`).toBe(true);
        } else expect(declared, `${name}: volume ${m.source}`).toContain(m.source);
      }
    }
  });

  it("documents the demo commands in docs/operations.md", () => {
    const doc = readFileSync(join(root, "docs/operations.md"), "utf8");
    expect(doc).toContain("docker compose up");
    expect(doc).toContain("local-token --namespace team-a --state-dir /var/lib/registry-token-exchange");
    expect(doc).toMatch(/skopeo copy .*127\.0\.0\.1:5000\/team-a\//s);
  });
});
