/**
 * The `explain` command (wired in `cli/index.ts`), returning its output instead of printing it so tests
 * can assert it exactly.
 *
 * `explain --config FILE --token FILE|- [--scope S]... [--service S] [--fetch-keys]` runs the service's own
 * `TokenRealm.authorize` path (issuer lookup, `aud`/`exp`/`nbf`/`iat`/`sub` checks, per-registry audiences,
 * the 60 s lifetime floor, exchange credentials, the policy) on a token read from a file. It contacts
 * nothing unless `--fetch-keys` is given: a cluster with `jwksFile` is checked against that file; any other
 * cluster's signature is NOT checked, which the output says on its first line. The claims are then checked
 * by the very same verifier, over a copy of the token re-signed with a throw-away key that only this
 * process trusts, so the offline answer differs from the service's only in the signature. `--token -`
 * reads the token from standard input; no error ever echoes a value that looks like a token.
 *
 * Exit codes: 0 ok; 2 configuration errors and usage errors; 1 the service would refuse the token.
 */
import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { decodeJwt } from "jose";
import { derivedKindOf } from "../authn/derived.js";
import type { VerificationKey } from "../authn/jwk.js";
import { ClusterKeySet } from "../authn/jwks.js";
import { ServiceAccountVerifier, type VerificationKeySource } from "../authn/verify.js";
import { MemoryStore } from "../cache/store.js";
import { type ClusterConfig, SERVICE_ACCOUNT_ALGORITHMS } from "../config/schema.js";
import { RequestError } from "../errors.js";
import { isJwsAlgorithm, type JwsAlgorithm } from "../jose/jws.js";
import { Policy } from "../policy/engine.js";
import { credentialKind, explain, formatExplanation } from "../policy/explain.js";
import { parseScopes } from "../policy/scope.js";
import { validatePolicy } from "../policy/validate.js";
import { TokenRealm } from "../realm/realm.js";
import {
  type CommandDeps,
  type CommandResult,
  errorLines,
  loadConfig,
  loadSigningKeys,
  silent,
  warningLines,
} from "./command-common.js";

/** Reads the process's standard input to its end (UTF-8). */
async function readProcessStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Whether a `--token` value could be a credential rather than a path (a JWT's shape, a JWS header's
 * `eyJ`, or longer than a path usually is): such a value is never echoed in an error, not even to its
 * owner's terminal (terminals are logged and screens shared).
 */
function looksLikeCredential(value: string): boolean {
  return value.length > 200 || value.includes("eyJ") || /^[\w-]+\.[\w-]+\.[\w-]*$/.test(value.trim());
}

/** Options of {@link explainCommand}. */
export interface ExplainOptions {
  /** The config file, or the layers merged in order (`--config` repeated). */
  config: string | readonly string[];
  token: string;
  scope?: string[] | undefined;
  service?: string | undefined;
  fetchKeys?: boolean | undefined;
}

/** `key:` padded to the width of the longest label. */
const label = (key: string) => `${`${key}:`.padEnd(17)}`;

/** The `iss` a token claims, unverified, or `undefined` when it has none readable. */
function claimedIssuer(token: string): string | undefined {
  try {
    const iss = decodeJwt(token).iss;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    return undefined;
  }
}

/** Key pair parameters of a throw-away key for each algorithm a service-account token may use. */
function throwAwayKeyPair(alg: JwsAlgorithm): { privateKey: KeyObject; publicKey: KeyObject } {
  if (alg.startsWith("RS")) return generateKeyPairSync("rsa", { modulusLength: 2048 });
  const namedCurve = alg === "ES256" ? "P-256" : alg === "ES384" ? "P-384" : "P-521";
  return generateKeyPairSync("ec", { namedCurve });
}

/**
 * A copy of `token` with the very same header and payload segments (byte for byte), signed with a fresh
 * key of the same algorithm, and that key; or `undefined` when the header names no algorithm a
 * service-account token may use (the verifier then refuses the original token before looking at any
 * key). Header parameters are not interpreted here: `crit`, `b64` and the rest reach the verifier as the
 * service would see them, so the offline answer is the service's (RFC 7515 §4.1.11 `crit` is refused).
 */
function resign(token: string): { token: string; key: KeyObject } | undefined {
  const [encodedHeader, encodedPayload, signature, ...rest] = token.split(".");
  if (
    encodedHeader === undefined ||
    encodedPayload === undefined ||
    signature === undefined ||
    rest.length > 0
  ) {
    return undefined;
  }
  let alg: unknown;
  try {
    alg = (JSON.parse(Buffer.from(encodedHeader, "base64url").toString("utf8")) as { alg?: unknown }).alg;
  } catch {
    return undefined;
  }
  if (!isJwsAlgorithm(alg) || !(SERVICE_ACCOUNT_ALGORITHMS as readonly string[]).includes(alg))
    return undefined;
  const { privateKey, publicKey } = throwAwayKeyPair(alg);
  const input = `${encodedHeader}.${encodedPayload}`;
  const hash = `sha${alg.slice(2)}`;
  const signed = sign(
    hash,
    Buffer.from(input),
    alg.startsWith("ES") ? { key: privateKey, dsaEncoding: "ieee-p1363" } : privateKey,
  );
  return { token: `${input}.${signed.toString("base64url")}`, key: publicKey };
}

/**
 * A stand-in for a cluster's key set that offers only `key`: used offline for clusters whose keys cannot
 * be read without contacting them. It never fetches anything.
 */
function offlineKeySet(cluster: ClusterConfig, key: KeyObject | undefined): VerificationKeySource {
  return {
    cluster,
    candidates: async (kid: string | undefined): Promise<VerificationKey[]> =>
      key === undefined ? [] : [{ kid: kid ?? "", kty: key.asymmetricKeyType === "ec" ? "EC" : "RSA", key }],
    refreshAfterMiss: async () => false,
    hasKey: () => false,
    trustsKey: async () => false,
    close: async () => {},
  };
}

/**
 * `registry-token-exchange explain`: what `/token` would grant a token, offline unless `fetchKeys`.
 * @returns the explanation on stdout (first line: whether the signature was checked) and exit code 0; the
 *   refusal and exit code 1 when the service would refuse the token; problems and exit code 2 for an
 *   invalid config or usage
 */
export async function explainCommand(opts: ExplainOptions, deps: CommandDeps = {}): Promise<CommandResult> {
  const now = deps.now ?? Date.now;
  const loaded = loadConfig(opts.config, deps);
  if ("code" in loaded) return loaded;
  const config = loaded;
  const { errors, warnings } = validatePolicy(config);
  const problems = [...errors];
  const signingKeys = loadSigningKeys(config, problems);
  if (problems.length > 0)
    return { stdout: "", stderr: warningLines(warnings) + errorLines(problems), code: 2 };
  const stderr = warningLines(warnings);
  const usage = (message: string): CommandResult => ({
    stdout: "",
    stderr: `${stderr}error: ${message}\n`,
    code: 2,
  });

  const served = config.registries.map((r) => `"${r.service}"`).join(", ");
  const service =
    opts.service ?? (config.registries.length === 1 ? config.registries[0]?.service : undefined);
  if (service === undefined) return usage(`explain: pass --service (this config serves ${served})`);
  let scopes: ReturnType<typeof parseScopes>;
  try {
    scopes = parseScopes(opts.scope ?? []);
  } catch (err) {
    if (err instanceof RequestError) return usage(`explain: ${err.message}`);
    throw err;
  }
  let token: string;
  if (opts.token === "-") {
    token = (await (deps.readStdin ?? readProcessStdin)()).trim();
    if (token === "") return usage("explain: --token -: standard input is empty");
  } else {
    try {
      token = readFileSync(opts.token, "utf8").trim();
    } catch (err) {
      if (looksLikeCredential(opts.token)) {
        return usage(
          "explain: --token takes a file path, or - to read the token from standard input; the value given looks like a token itself and is not shown",
        );
      }
      return usage(
        `explain: cannot read the token file ${opts.token}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  }

  const logger = silent();
  const kind = derivedKindOf(token);
  const iss = kind === undefined ? claimedIssuer(token) : undefined;
  const index = config.clusters.findIndex((c) => c.issuer === iss);
  const target = config.clusters[index];
  const live = (c: ClusterConfig) => opts.fetchKeys === true || c.jwksFile !== undefined;
  let presented = token;
  let offlineKey: KeyObject | undefined;
  if (target && !live(target)) {
    const copy = resign(token);
    if (copy) ({ token: presented, key: offlineKey } = copy);
  }
  const keySets = config.clusters.map((c) =>
    live(c) ? new ClusterKeySet(c, { logger, now }) : offlineKeySet(c, offlineKey),
  );
  let signature: string;
  if (kind !== undefined) {
    signature = `checked (${credentialKind(token)}: against this service's signing key for the registry)`;
  } else if (!target) {
    signature = "not checked (the token's issuer is not a configured cluster)";
  } else if (target.verification === "tokenReview") {
    signature = `NOT CHECKED (offline): cluster "${target.name}" has verification: tokenReview, and explain never asks the API server; the identity below is what the token claims`;
  } else if (!live(target)) {
    signature = `NOT CHECKED (offline): the identity below is what the token claims; pass --fetch-keys to verify it against the keys of cluster "${target.name}"`;
  } else if (target.jwksFile !== undefined) {
    signature = `checked against clusters[${index}].jwksFile (${target.jwksFile})`;
  } else {
    signature = `checked against the keys of cluster "${target.name}" (fetched)`;
  }
  if (target !== undefined && kind === undefined && target.verification === "both") {
    signature += `; the TokenReview the service also asks for (verification: both) is not made offline`;
  }

  const realm = new TokenRealm({
    config,
    verifier: new ServiceAccountVerifier(keySets, { now }),
    policy: new Policy(config.policy.rules),
    signingKeys,
    store: new MemoryStore({ maxEntries: 100, now }),
    logger,
    now,
  });
  try {
    const result = await realm.authorize({ credential: presented, service, scopes });
    const body = formatExplanation(explain(result, credentialKind(token), now()));
    return { stdout: `${label("signature")}${signature}\n${body}`, stderr, code: 0 };
  } catch (err) {
    if (!(err instanceof RequestError)) throw err;
    // The operator holds the config: show the detail the service keeps for its log.
    if (err.code === "unknown_service")
      return usage(`explain: ${err.message} (this config serves ${served})`);
    const extra = err.code === "keys_unavailable" ? err.logDetail?.reason : err.logDetail?.detail;
    const detail = typeof extra === "string" && extra !== "" ? ` (${extra})` : "";
    return {
      stdout: `${label("signature")}${signature}\n${label("refused")}${err.code}: ${err.message}${detail}\n`,
      stderr,
      code: 1,
    };
  } finally {
    await Promise.all(keySets.map((ks) => ks.close()));
  }
}
