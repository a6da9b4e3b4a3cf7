/**
 * The `registry-token-exchange` command line.
 *
 *   serve --config FILE        run the service (--workers N: N processes sharing the port; --config
 *                              repeated layers files: later ones deep-merge into earlier ones)
 *   serve --local              run in local mode (built-in issuer, generated keys, in-memory cache;
 *                              --redis-url URL shares the cache through Redis, as in docker-compose.yml;
 *                              with --config it sets cache.redisUrl over the file's)
 *   local-token ...            mint a service-account token from the local issuer
 *   keygen --out DIR           generate a signing key and self-signed certificate
 *   check-config --config FILE validate a config file and load its keys, contacting nothing
 *                              (--fetch-keys: fetch cluster keys too; --strict: warnings fail)
 *   explain --config FILE --token FILE|- [--scope S]... [--service S] [--fetch-keys]
 *                              what /token would grant that token, offline unless --fetch-keys
 *   credential-provider --url URL [--ca-file F] [--timeout S]
 *                              the kubelet credential provider exec plugin (stdin -> service -> stdout)
 *
 * Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
 */
import cluster from "node:cluster";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { versionLine } from "../build-info.js";
import { ConfigError } from "../errors.js";
import type { LocalIssuer } from "../local/issuer.js";
import type { CommandResult } from "./commands.js";

// Every other module is imported by the command that needs it, when it runs: the primary of
// `serve --workers N` then loads only the config loader, the logger and the metrics aggregator, never
// the app (fastify, undici, ioredis, jose...), and `credential-provider` loads none of the server.

const DEFAULT_STATE_DIR = ".local";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * A usage error as it may be printed: the value of any `--option=value` and anything shaped like a JWT
 * are masked (`--password=***`), so no credential typed in the wrong place is echoed.
 */
function maskCredentials(text: string): string {
  return text.replace(/(--[\w-]+=)[^\s'"]+/g, "$1***").replace(/eyJ[\w-]*\.[\w-]*\.[\w-]*/g, "***");
}

/** Options of `serve`. */
interface ServeOptions {
  config?: string[];
  local?: boolean;
  stateDir: string;
  workers: number;
  redisUrl?: string;
  watchConfig?: boolean;
}

/** Builds the commander program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command()
    .name("registry-token-exchange")
    .description("Exchange Kubernetes service-account tokens for short-lived Docker registry tokens.")
    .version(versionLine(), "-V, --version", "print the version, Node.js version and platform")
    // Usage errors quote what was typed: never a credential pasted in the wrong place (every command
    // defined below inherits this).
    .configureOutput({ outputError: (text, write) => write(maskCredentials(text)) })
    .showHelpAfterError();

  program
    .command("serve")
    .description("run the service (token realm, JWKS, health)")
    .option(
      "-c, --config <file>",
      "YAML config file; repeat it to layer files (later ones deep-merge into earlier ones)",
      collect,
    )
    .option("--local", "local mode: built-in cluster issuer, generated signing key, in-memory cache")
    .option("--state-dir <dir>", "local mode state folder", DEFAULT_STATE_DIR)
    .option(
      "--redis-url <url>",
      "share the cache through this Redis (redis://host:port/db); with --config it sets cache.redisUrl",
    )
    .option("--watch-config", "reload the config when a config file changes (SIGHUP always reloads)")
    .option(
      "--workers <n>",
      "worker processes sharing the port (node:cluster; share state through Redis)",
      positiveInt,
      1,
    )
    .action(async (opts: ServeOptions) => {
      if (Boolean(opts.config) === Boolean(opts.local)) {
        throw new ConfigError(["serve: pass exactly one of --config FILE or --local"]);
      }
      if (opts.local && opts.workers > 1) {
        throw new ConfigError(["serve: --workers needs --config (local mode runs one process)"]);
      }
      if (opts.local) {
        const [
          { LOCAL_CREDENTIAL_PROVIDER_AUDIENCE, LOCAL_ISSUER_PREFIX, LOCAL_SERVICE, prepareLocalMode },
          { startServer },
        ] = await Promise.all([import("../local/mode.js"), import("../server.js")]);
        const setup = await prepareLocalMode(opts.stateDir, process.env, { redisUrl: opts.redisUrl });
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
            `  config in use:      ${setup.files.config}   (generated at each start; SIGHUP does not reload it)`,
            `  mint a pod token:   npm run -s token -- --namespace team-a${opts.stateDir === DEFAULT_STATE_DIR ? "" : ` --state-dir ${setup.stateDir}`}`,
            `  credential provider: POST ${server.url}/v1/credential-provider (audience ${LOCAL_CREDENTIAL_PROVIDER_AUDIENCE}, hosts ${LOCAL_SERVICE}, 127.0.0.1:5000, localhost:5000)`,
            "",
          ].join("\n"),
        );
        return;
      }
      // A worker answers the primary's metrics collection from its first moment (with nothing until its
      // app exists), so a scrape during a worker's start-up never waits for it.
      const { contributeRegistries } = await import("../cluster-metrics.js");
      contributeRegistries([]);
      const { loadConfigFile } = await import("../config/load.js");
      const overrides = { redisUrl: opts.redisUrl };
      const config = loadConfigFile(opts.config!, process.env, overrides);
      if (opts.workers > 1 && cluster.isPrimary) {
        const [{ createLogger }, { runWorkers }, { redisConfigured }] = await Promise.all([
          import("../logging.js"),
          import("../server.js"),
          import("../cache/redis.js"),
        ]);
        const logger = createLogger(config.logging.level);
        if (!redisConfigured(config.cache)) {
          logger.warn("--workers without Redis: each worker keeps its own cache and rate-limit counters");
        }
        runWorkers(opts.workers, logger);
        return;
      }
      const { startServer } = await import("../server.js");
      // Every layer is re-read on reload, and every layer is watched.
      const files = opts.config!;
      await startServer(config, {}, true, {
        load: () => loadConfigFile(files, process.env, overrides),
        file: files.join(", "),
        watchFile: opts.watchConfig ? files : undefined,
      });
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
        const [{ LocalIssuer }, { LOCAL_SERVICE }] = await Promise.all([
          import("../local/issuer.js"),
          import("../local/mode.js"),
        ]);
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
    .option("--force", "overwrite an existing key (every registry trusting the old certificate breaks)")
    .action(async (opts: { out: string; cn: string; force?: boolean }) => {
      const existing = ["signing-key.pem", "signing-cert.pem"].filter((f) =>
        existsSync(join(resolve(opts.out), f)),
      );
      if (existing.length > 0 && !opts.force) {
        throw new ConfigError([
          `keygen: ${existing.join(", ")} already in ${resolve(opts.out)}; refusing to overwrite (use --force)`,
        ]);
      }
      const { generateSigningKeyFiles, loadSigningKey } = await import("../jose/signing-key.js");
      const files = await generateSigningKeyFiles(resolve(opts.out), opts.cn);
      const key = loadSigningKey(files.keyFile, files.certFile, "keygen");
      process.stdout.write(`${files.keyFile}\n${files.certFile}\nkid ${key.kid} (${key.alg})\n`);
    });

  program
    .command("check-config")
    .description(
      "validate a config file (schema, files, signing keys, policy, jwksFile keys); contacts nothing unless --fetch-keys",
    )
    .requiredOption(
      "-c, --config <file>",
      "YAML config file (repeatable: layers merged as by serve)",
      collect,
    )
    .option("--fetch-keys", "also fetch every other cluster's keys (discovery + JWKS), as the service would")
    .option("--strict", "treat warnings as errors (exit status 2)")
    .action(async (opts: { config: string[]; fetchKeys?: boolean; strict?: boolean }) => {
      const { checkConfigCommand } = await import("./commands.js");
      printResult(await checkConfigCommand(opts));
    });

  program
    .command("explain")
    .description(
      "what /token would grant a service-account token (offline: claims checked, signature only with --fetch-keys or a jwksFile)",
    )
    .requiredOption(
      "-c, --config <file>",
      "YAML config file (repeatable: layers merged as by serve)",
      collect,
    )
    .requiredOption(
      "-t, --token <file>",
      "file holding the token (a service-account token or an exchange credential); - reads standard input",
    )
    .option(
      "-s, --scope <scope>",
      "requested scope, e.g. repository:team-a/app:pull,push (repeatable)",
      collect,
    )
    .option("--service <service>", "registry service (default: the config's only registry)")
    .option("--fetch-keys", "verify the signature against the cluster's keys (contacts the cluster)")
    .action(
      async (opts: {
        config: string[];
        token: string;
        scope?: string[];
        service?: string;
        fetchKeys?: boolean;
      }) => {
        const { explainCommand } = await import("./commands.js");
        printResult(await explainCommand(opts));
      },
    );

  program
    .command("credential-provider")
    .description(
      "kubelet image credential provider plugin (KEP-4412): CredentialProviderRequest on stdin, " +
        "CredentialProviderResponse on stdout, via POST <url>/v1/credential-provider",
    )
    .requiredOption("--url <url>", "base URL of the registry-token-exchange service")
    .option("--ca-file <file>", "PEM CA bundle trusted for the service's TLS certificate")
    .option(
      "--timeout <seconds>",
      "total time budget including retries (kubelet kills plugins after 60 s)",
      boundedSeconds,
      50,
    )
    .option("--attempt-timeout <seconds>", "time budget of one attempt", boundedSeconds, 10)
    // kubelet logs stderr: a usage error is one line and exit status 2, as in the sh plugin.
    .showHelpAfterError(false)
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .action(async (opts: { url: string; caFile?: string; timeout: number; attemptTimeout: number }) => {
      // Loaded lazily: the plugin runs once per image pull and needs none of the server's modules.
      const { CredentialProviderError, readAll, runCredentialProvider } = await import(
        "./credential-provider.js"
      );
      let output: string;
      try {
        output = await runCredentialProvider(await readAll(process.stdin), {
          url: opts.url,
          caFile: opts.caFile,
          timeoutSeconds: opts.timeout,
          attemptTimeoutSeconds: opts.attemptTimeout,
        });
      } catch (err) {
        if (!(err instanceof CredentialProviderError)) throw err;
        // The sh plugin's words and prefix, so kubelet's log reads the same whichever plugin runs.
        process.stderr.write(`registry-token-exchange-credential-provider: ${err.message}\n`);
        process.exit(1);
      }
      process.stdout.write(output);
    });

  return program;
}

/** Prints a command's output; a non-zero code becomes the exit status once the output is flushed. */
function printResult(result: CommandResult): void {
  process.stdout.write(result.stdout);
  // Errors may quote what was typed (a path that was really a token): masked like usage errors.
  process.stderr.write(maskCredentials(result.stderr));
  if (result.code !== 0) process.exitCode = result.code;
}

function boundedSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 600)
    throw new InvalidArgumentError("must be a number of seconds in (0, 600]");
  return n;
}

/** Runs the CLI with `argv`; maps errors to exit codes and one-line messages. */
export async function main(argv: string[]): Promise<void> {
  try {
    const program = buildProgram();
    // Usage errors (unknown option, missing required option) exit 2, like configuration errors;
    // --help and --version exit 0.
    program.exitOverride();
    for (const command of program.commands) command.exitOverride();
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    if (err instanceof ConfigError) {
      // A token pasted where a path was expected is echoed by "cannot read <path>": masked like usage errors.
      for (const p of err.problems) process.stderr.write(`config error: ${maskCredentials(p)}\n`);
      process.exit(2);
    }
    process.stderr.write(
      `error: ${maskCredentials((err as Error).message?.split("\n")[0] ?? String(err))}\n`,
    );
    process.exit(1);
  }
}
