/**
 * The `registry-token-exchange` command line.
 *
 *   serve --config FILE        run the service
 *   serve --local              run in local mode (built-in issuer, generated keys, in-memory cache)
 *   local-token ...            mint a service-account token from the local issuer
 *   keygen --out DIR           generate a signing key and self-signed certificate
 *   check-config --config FILE validate a config file and load its keys, contacting nothing
 *
 * Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { loadConfigFile } from "./config/load.js";
import { ConfigError } from "./errors.js";
import { LocalIssuer } from "./local/issuer.js";
import { LOCAL_ISSUER_PREFIX, LOCAL_SERVICE, prepareLocalMode } from "./local/mode.js";
import { Policy } from "./policy/engine.js";
import { startServer } from "./server.js";
import { generateSigningKeyFiles, loadSigningKey } from "./token/signing.js";

const DEFAULT_STATE_DIR = ".local";

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    return pkg.version;
  } catch {
    return "0.0.0";
  }
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Builds the commander program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command()
    .name("registry-token-exchange")
    .description("Exchange Kubernetes service-account tokens for short-lived Docker registry tokens.")
    .version(version())
    .showHelpAfterError();

  program
    .command("serve")
    .description("run the service (token realm, JWKS, health)")
    .option("-c, --config <file>", "YAML config file")
    .option("--local", "local mode: built-in cluster issuer, generated signing key, in-memory cache")
    .option("--state-dir <dir>", "local mode state folder", DEFAULT_STATE_DIR)
    .action(async (opts: { config?: string; local?: boolean; stateDir: string }) => {
      if (Boolean(opts.config) === Boolean(opts.local)) {
        throw new ConfigError(["serve: pass exactly one of --config FILE or --local"]);
      }
      if (opts.local) {
        const setup = await prepareLocalMode(opts.stateDir, process.env);
        const server = await startServer(
          setup.config,
          { localIssuer: { issuer: setup.issuer, prefix: LOCAL_ISSUER_PREFIX } },
          true,
        );
        process.stderr.write(
          [
            "",
            `registry-token-exchange: LOCAL MODE on ${server.url} (not for production)`,
            `  cluster issuer:     ${setup.issuer.issuer}`,
            `  registry service:   ${LOCAL_SERVICE}`,
            `  signing key:        ${setup.files.signingKey}`,
            `  signing cert:       ${setup.files.signingCert}   (the registry's auth.token.rootcertbundle)`,
            `  config in use:      ${setup.files.config}`,
            `  mint a pod token:   npx registry-token-exchange local-token --namespace team-a --state-dir ${setup.stateDir}`,
            "",
          ].join("\n"),
        );
        return;
      }
      const config = loadConfigFile(opts.config!);
      await startServer(config, {}, true);
    });

  program
    .command("local-token")
    .description("mint a service-account token from the local issuer (local mode only)")
    .requiredOption("-n, --namespace <namespace>", "service account namespace")
    .option("-s, --service-account <name>", "service account name", "default")
    .option("-a, --audience <aud>", "token audience (repeatable)", collect)
    .option("--ttl <seconds>", "token lifetime in seconds", positiveInt, 3600)
    .option("--pod <name>", "bind to a pod of this name")
    .option("--node <name>", "add a node claim")
    .option("--state-dir <dir>", "local mode state folder", DEFAULT_STATE_DIR)
    .action(
      async (opts: {
        namespace: string;
        serviceAccount: string;
        audience?: string[];
        ttl: number;
        pod?: string;
        node?: string;
        stateDir: string;
      }) => {
        let issuer: LocalIssuer;
        try {
          issuer = LocalIssuer.load(join(resolve(opts.stateDir), "issuer.json"));
        } catch {
          throw new ConfigError([
            `local-token: no local issuer in ${resolve(opts.stateDir)}: start the service in local mode first (npm start)`,
          ]);
        }
        const token = await issuer.mint({
          namespace: opts.namespace,
          serviceAccount: opts.serviceAccount,
          audiences: opts.audience ?? [LOCAL_SERVICE],
          ttlSeconds: opts.ttl,
          ...(opts.pod ? { podName: opts.pod } : {}),
          ...(opts.node ? { nodeName: opts.node } : {}),
        });
        process.stdout.write(`${token}\n`);
      },
    );

  program
    .command("keygen")
    .description("generate an ECDSA P-256 signing key and self-signed certificate for minted tokens")
    .requiredOption("-o, --out <dir>", "output folder")
    .option("--cn <name>", "certificate common name", "registry-token-exchange")
    .action(async (opts: { out: string; cn: string }) => {
      const files = await generateSigningKeyFiles(resolve(opts.out), opts.cn);
      const key = loadSigningKey(files.keyFile, files.certFile, "keygen");
      process.stdout.write(`${files.keyFile}\n${files.certFile}\nkid ${key.kid} (${key.alg})\n`);
    });

  program
    .command("check-config")
    .description("validate a config file, load its signing keys and compile its policy (contacts nothing)")
    .requiredOption("-c, --config <file>", "YAML config file")
    .action(async (opts: { config: string }) => {
      const config = loadConfigFile(opts.config);
      const problems: string[] = [];
      config.registries.forEach((r, i) => {
        try {
          loadSigningKey(r.signingKey.keyFile, r.signingKey.certFile, `registries[${i}].signingKey`);
        } catch (err) {
          if (err instanceof ConfigError) problems.push(...err.problems);
          else throw err;
        }
      });
      try {
        new Policy(config.policy.rules);
      } catch (err) {
        if (err instanceof ConfigError) problems.push(...err.problems);
        else throw err;
      }
      if (problems.length > 0) throw new ConfigError(problems);
      process.stdout.write(
        `ok: ${config.clusters.length} cluster(s), ${config.registries.length} registr${config.registries.length === 1 ? "y" : "ies"}, ${config.policy.rules.length} rule(s)\n`,
      );
    });

  return program;
}

/** Runs the CLI with `argv`; maps errors to exit codes and one-line messages. */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`config error: ${p}\n`);
      process.exit(2);
    }
    process.stderr.write(`error: ${(err as Error).message?.split("\n")[0] ?? String(err)}\n`);
    process.exit(1);
  }
}
