/**
 * What to tell an operator when an outbound TLS connection fails certificate verification: which kind of
 * failure it is, and which option fixes it (`--ca-file` for the credential provider plugins,
 * `clusters[].caFile` for a cluster's discovery and JWKS). The sh plugin
 * (`deploy/kubelet/registry-token-exchange-credential-provider.sh`) prints the same sentences for the
 * same failures of curl; a test runs both against the same servers.
 */

/** Kinds of certificate verification failure (RFC 5280 §6 path validation, RFC 6125 host names). */
export type TlsProblem = "self-signed" | "unknown-ca" | "expired" | "hostname";

/** OpenSSL/Node error codes per kind (Node's `err.code` on a failed TLS connection). */
const CODES: Record<string, TlsProblem> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed",
  SELF_SIGNED_CERT_IN_CHAIN: "self-signed",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unknown-ca",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unknown-ca",
  UNABLE_TO_GET_ISSUER_CERT: "unknown-ca",
  CERT_UNTRUSTED: "unknown-ca",
  CERT_HAS_EXPIRED: "expired",
  CERT_NOT_YET_VALID: "expired",
  ERR_TLS_CERT_ALTNAME_INVALID: "hostname",
};

/**
 * Classifies a failure by its error code or message (Node's codes, or OpenSSL's messages as curl
 * prints them).
 * @returns the kind, or `undefined` when it is not a certificate verification failure
 */
export function classifyTlsFailure(codeOrMessage: string): TlsProblem | undefined {
  for (const [code, kind] of Object.entries(CODES)) if (codeOrMessage.includes(code)) return kind;
  const m = codeOrMessage.toLowerCase();
  if (/self[- ]signed certificate/.test(m)) return "self-signed";
  if (/unable to get (local )?issuer certificate|unable to verify the first certificate/.test(m))
    return "unknown-ca";
  if (/certificate has expired|certificate is not yet valid/.test(m)) return "expired";
  if (/subject name|does not match target host|altnames/.test(m)) return "hostname";
  return undefined;
}

/**
 * One sentence naming the failure and its fix.
 * @param kind the failure
 * @param subject whose certificate, e.g. "the service's certificate"
 * @param option the option that sets the trusted CA bundle, e.g. `--ca-file` or `clusters[0].caFile`
 */
export function tlsAdvice(kind: TlsProblem, subject: string, option: string): string {
  switch (kind) {
    case "self-signed":
      return `TLS: ${subject} is self-signed and not trusted: set ${option} to that certificate (or to the CA that signed it)`;
    case "unknown-ca":
      return `TLS: ${subject} is signed by a CA that is not trusted: set ${option} to that CA's certificate`;
    case "expired":
      return `TLS: ${subject} has expired or is not yet valid: renew it (${option} cannot fix this)`;
    case "hostname":
      return `TLS: ${subject} does not name the host connected to: use a host name the certificate names`;
  }
}
