/**
 * skopeo (containers/image, the library behind podman and CRI-O) as a registry client: it answers the
 * registry's Bearer challenge with GET <realm>?service=..&scope=.. and Basic credentials, reads `token`.
 *
 * Runs hermetically: `--insecure-policy` (no /etc/containers/policy.json needed), plain HTTP to the
 * loopback registry, credentials on the command line (no auth file), temp files in the suite's dir.
 */
import { type RunResult, run } from "./process.js";

/** Common options: no trust policy file, temp files in `tmpDir`. */
function globalArgs(tmpDir: string): string[] {
  return ["--insecure-policy", "--tmpdir", tmpDir, "--command-timeout", "40s"];
}

/**
 * `skopeo copy oci:<layout>:<tag> docker://<dest>` pushing with `x:<token>` as Basic credentials.
 * @param digestFile where skopeo writes the pushed manifest digest
 */
export function skopeoPush(opts: {
  layoutDir: string;
  tag: string;
  dest: string;
  token: string;
  tmpDir: string;
  digestFile: string;
}): Promise<RunResult> {
  return run(
    "skopeo",
    [
      ...globalArgs(opts.tmpDir),
      "copy",
      "--retry-times",
      "0",
      "--dest-tls-verify=false",
      "--dest-creds",
      `x:${opts.token}`,
      "--digestfile",
      opts.digestFile,
      `oci:${opts.layoutDir}:${opts.tag}`,
      `docker://${opts.dest}`,
    ],
    { timeoutMs: 45_000 },
  );
}

/** `skopeo copy docker://<src> docker://<dest>` within the registry, `x:<token>` on both sides. */
export function skopeoCopyWithin(opts: {
  src: string;
  dest: string;
  token: string;
  tmpDir: string;
}): Promise<RunResult> {
  return run(
    "skopeo",
    [
      ...globalArgs(opts.tmpDir),
      "copy",
      "--retry-times",
      "0",
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      "--src-creds",
      `x:${opts.token}`,
      "--dest-creds",
      `x:${opts.token}`,
      `docker://${opts.src}`,
      `docker://${opts.dest}`,
    ],
    { timeoutMs: 45_000 },
  );
}

/** `skopeo inspect docker://<ref>` (add `--raw` to get the manifest bytes) as `x:<token>`. */
export function skopeoInspect(opts: {
  ref: string;
  token: string;
  tmpDir: string;
  raw?: boolean;
}): Promise<RunResult> {
  return run(
    "skopeo",
    [
      ...globalArgs(opts.tmpDir),
      "inspect",
      "--retry-times",
      "0",
      "--tls-verify=false",
      "--creds",
      `x:${opts.token}`,
      ...(opts.raw ? ["--raw"] : []),
      `docker://${opts.ref}`,
    ],
    { timeoutMs: 45_000 },
  );
}
