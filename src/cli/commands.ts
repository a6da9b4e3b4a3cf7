/**
 * The `explain` (`cli/explain.ts`) and `check-config` (`cli/check-config.ts`) commands, wired in
 * `cli/index.ts`, returning their output instead of printing it so tests can assert it exactly.
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
 * `check-config --config FILE [--fetch-keys] [--strict]` validates the file (schema, files, signing keys,
 * `validatePolicy`, `jwksFile` key sets) and contacts nothing unless `--fetch-keys` is given, which loads
 * every other cluster's keys through discovery/JWKS as the service would.
 *
 * Exit codes: 0 ok (warnings are printed but pass); 2 configuration errors, usage errors, and with
 * `--strict` warnings too; 1 `explain`: the service would refuse the token, `check-config --fetch-keys`:
 * a cluster's keys could not be fetched.
 */

export { checkConfigCommand } from "./check-config.js";
export type { CommandResult } from "./command-common.js";
export { type ExplainOptions, explainCommand } from "./explain.js";
