/**
 * A real Docker registry (distribution 2.8, Debian's `docker-registry`) whose token realm is the service
 * under test: `auth.token` points at `<service>/token`, trusts the signing certificate of the test config
 * as its `rootcertbundle`, and expects `iss = registry-token-exchange`, `aud = registry.test`.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { SERVICE, signingKeyFiles } from "../../helpers/fixtures.js";
import { freePort, ManagedProcess, waitUntil } from "./process.js";

/** The registry binary (Debian names distribution's `registry` this way). */
export const REGISTRY_BIN = "docker-registry";
/** The `issuer` the test config's registry entry sets (registries[0].issuer). */
export const TOKEN_ISSUER = "registry-token-exchange";

/** A running registry. */
export interface RegistryServer {
  /** `127.0.0.1:<port>`, the host part of image references. */
  host: string;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  process: ManagedProcess;
  stop: () => Promise<void>;
}

/**
 * Writes a distribution config (version 0.1) into `dir`: filesystem storage under `dir/storage`, HTTP on
 * 127.0.0.1:`port`, token auth against `realm`.
 * @param rootcertbundle the certificates the registry trusts token signatures from (a PEM file, possibly
 *   several certificates); default: the shared test signing certificate
 * @returns the config file path
 */
async function writeRegistryConfig(
  dir: string,
  port: number,
  realm: string,
  rootcertbundle?: string,
): Promise<string> {
  const certFile = rootcertbundle ?? (await signingKeyFiles()).certFile;
  const config = {
    version: 0.1,
    log: { level: "info", formatter: "text", accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: join(dir, "storage") },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${port}`, secret: "e2e-only-not-a-secret" },
    auth: {
      token: { realm, service: SERVICE, issuer: TOKEN_ISSUER, rootcertbundle: certFile },
    },
    health: { storagedriver: { enabled: false } },
  };
  const file = join(dir, "config.yml");
  writeFileSync(file, stringify(config));
  return file;
}

/** GET /v2/ answers 401 with a Bearer challenge naming our realm: the registry is up and wired to us. */
async function challengesBearer(url: string, realm: string): Promise<boolean> {
  const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) });
  await res.body?.cancel();
  const challenge = res.headers.get("www-authenticate") ?? "";
  return res.status === 401 && challenge.startsWith("Bearer ") && challenge.includes(`realm="${realm}"`);
}

/**
 * Starts `docker-registry serve` in `dir` (config, storage and log there) for the token `realm`, and
 * waits for its Bearer challenge. Retries with a new port if the chosen one was taken meanwhile.
 * @param options `rootcertbundle` (see {@link writeRegistryConfig}); `port` to reuse (a restart)
 */
export async function startRegistry(
  dir: string,
  realm: string,
  options: { rootcertbundle?: string; port?: number } = {},
): Promise<RegistryServer> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = attempt === 1 && options.port !== undefined ? options.port : await freePort();
    const file = await writeRegistryConfig(dir, port, realm, options.rootcertbundle);
    const proc = new ManagedProcess(
      "docker-registry",
      REGISTRY_BIN,
      ["serve", file],
      join(dir, "registry.log"),
    );
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitUntil(`registry on ${url}`, () => challengesBearer(url, realm), { proc, timeoutMs: 20_000 });
      return { host: `127.0.0.1:${port}`, url, process: proc, stop: () => proc.stop() };
    } catch (err) {
      lastError = err;
      await proc.stop();
      if (!/address already in use/.test(proc.log())) break;
    }
  }
  throw lastError;
}
