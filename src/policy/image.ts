/**
 * Image references as kubelet passes them to credential providers (`CredentialProviderRequest.image`),
 * and the `auth` keys of the answer.
 *
 * Reference grammar: distribution's `reference` package — `[domain/]path[:tag][@digest]`. The first
 * component is a domain when it contains `.` or `:`, is `localhost`, or has upper-case letters; otherwise
 * the image lives on Docker Hub (`docker.io`, single names under `library/`), as docker normalises.
 *
 * `auth` keys follow kubelet's matching (pkg/credentialprovider/keyring.go URLsMatch): same number of host
 * labels, each matched as a glob; the port must be equal (absent on both or the same); the key's path a
 * literal prefix of the image path. The key this service answers is the image's own `host[:port]`, which
 * therefore matches every image on that registry host.
 */
import { RequestError, safeEcho } from "../errors.js";

/** Docker Hub's registry host, for references without a domain. */
const DOCKER_HUB = "docker.io";

/** A parsed image reference. */
export interface ImageReference {
  /** Registry host as written (`host[:port]`, `[v6]:port`), or `docker.io`. */
  host: string;
  /** Repository path (what registry scopes name), e.g. `team-a/app`, `library/nginx`. */
  repository: string;
  /** Tag, if any. */
  tag?: string | undefined;
  /** Digest, if any. */
  digest?: string | undefined;
}

const COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const PATH = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?";
const HOST = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?$`);
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
/** Longest accepted reference, characters. */
const MAX_REFERENCE_LENGTH = 512;

function invalid(image: string, why: string): RequestError {
  return new RequestError(
    "invalid_request",
    `image "${safeEcho(image)}" is not a valid image reference: ${why}`,
  );
}

/**
 * Parses an image reference.
 * @throws {RequestError} `invalid_request` (400) naming what is wrong
 */
export function parseImageReference(image: string): ImageReference {
  if (image === "") throw invalid(image, "it is empty");
  if (image.length > MAX_REFERENCE_LENGTH)
    throw invalid(image, `longer than ${MAX_REFERENCE_LENGTH} characters`);
  if (image.includes("://") || [...image].some((c) => c <= " " || c === "\u007f")) {
    throw invalid(image, "no scheme, spaces or control characters allowed");
  }
  let rest = image;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(image, "the digest is not algorithm:hex");
  }
  let host = DOCKER_HUB;
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  if (slash >= 0 && (/[.:]/.test(first) || first === "localhost" || first !== first.toLowerCase())) {
    host = first;
    rest = rest.slice(slash + 1);
    if (!HOST.test(host)) throw invalid(image, `"${safeEcho(host, 80)}" is not a registry host[:port]`);
    const port = /:(\d+)$/.exec(host)?.[1];
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65_535))
      throw invalid(image, "the port is out of range");
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(image, "the tag is not valid");
  }
  if (host === DOCKER_HUB && !rest.includes("/")) rest = `library/${rest}`;
  if (!PATH.test(rest)) {
    throw invalid(image, "the repository path must be lower-case components separated by '/'");
  }
  if (rest.length > 255) throw invalid(image, "the repository path is longer than 255 characters");
  return { host, repository: rest, tag, digest };
}
