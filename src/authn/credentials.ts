/**
 * Extracting the presented credential from a token-realm request.
 * - `Authorization: Basic base64(username:password)` (docker, containers/image, skopeo, curl -u): the
 *   password is the credential; the username is ignored (clients send anything there).
 * - `Authorization: Bearer <jwt>`: the credential as is.
 * RFC 7617 (Basic), RFC 6750 §2.1 (Bearer).
 */
import { RequestError } from "../errors.js";

/**
 * Longest accepted Authorization header, characters: a Basic header holding a maximal token
 * (base64 of `username:` + 8 KiB) fits; anything longer than Node's 16 KiB header limit never arrives.
 */
export const MAX_AUTHORIZATION_LENGTH = 12 * 1024;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A decoded credential. */
export interface PresentedCredential {
  /** How it was presented. */
  scheme: "basic" | "bearer";
  /** The Basic username, if any (never used for authorization). */
  username?: string | undefined;
  /** The secret: a service-account JWT. Never log it. */
  secret: string;
}

/**
 * Parses an Authorization header value.
 * @returns the credential, or `undefined` when the header is absent
 * @throws {RequestError} `malformed_credentials` for an unknown scheme, bad base64, no colon, or an
 *   empty password/token
 */
export function parseAuthorization(header: string | undefined): PresentedCredential | undefined {
  if (header === undefined || header === "") return undefined;
  if (header.length > MAX_AUTHORIZATION_LENGTH) {
    throw new RequestError("malformed_credentials", "Authorization header is too long");
  }
  const space = header.indexOf(" ");
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const value = space < 0 ? "" : header.slice(space + 1).trim();
  if (scheme === "bearer") {
    if (value === "") throw new RequestError("malformed_credentials", "Bearer credential is empty");
    return { scheme: "bearer", secret: value };
  }
  if (scheme === "basic") {
    if (value === "" || !BASE64.test(value) || value.length % 4 === 1) {
      throw new RequestError("malformed_credentials", "Basic credential is not valid base64");
    }
    const decoded = Buffer.from(value, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0)
      throw new RequestError(
        "malformed_credentials",
        'Basic credential has no ":" between username and password',
      );
    const secret = decoded.slice(colon + 1);
    if (secret === "")
      throw new RequestError("malformed_credentials", "Basic credential has an empty password");
    return { scheme: "basic", username: decoded.slice(0, colon), secret };
  }
  throw new RequestError("malformed_credentials", "unsupported Authorization scheme (use Basic or Bearer)");
}

/**
 * Like {@link parseAuthorization}, for endpoints where a credential is required.
 * @throws {RequestError} `missing_credentials` when the header is absent, `malformed_credentials` as above
 */
export function requireAuthorization(header: string | undefined): PresentedCredential {
  const credential = parseAuthorization(header);
  if (!credential) {
    throw new RequestError(
      "missing_credentials",
      "authentication required: send the service-account token as the Basic password or as a Bearer token",
    );
  }
  return credential;
}
