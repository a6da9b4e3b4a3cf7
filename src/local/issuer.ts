/**
 * A local stand-in for kube-apiserver's service-account issuer, for local mode, the quick start and the
 * tests. It serves Kubernetes' exact OIDC discovery document and JWKS (kubernetes
 * `pkg/serviceaccount/openidmetadata.go`) and mints tokens with the exact bound-token claim layout
 * (`pkg/serviceaccount/claims.go`): RS256 with an RSA key, `kid` = base64url(SHA-256(DER SPKI)).
 *
 * It is never active unless local mode is asked for (`serve --local`) or a test starts it.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomUUID,
} from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { SignJWT } from "jose";
import { kubernetesKeyId } from "../jose/kid.js";

/** What a minted service-account token is for. */
export interface LocalTokenRequest {
  namespace: string;
  serviceAccount: string;
  /** `aud` entries (Kubernetes always emits an array). */
  audiences: string[];
  /** Lifetime, seconds (kubelet's default for credential providers is 3600). */
  ttlSeconds?: number;
  /** Bind to a pod (adds `kubernetes.io.pod`; default: a pod named `<serviceAccount>-pod`). `null` = none. */
  podName?: string | null;
  /** Adds `kubernetes.io.node` (recent clusters put it on pod-bound tokens). */
  nodeName?: string;
  /** Current time, epoch ms (frozen in tests). */
  nowMs?: number;
  /** Override header fields (tests of key selection: `kid: ""`, absent `kid`). */
  header?: { kid?: string | undefined };
  /** Extra or overriding claims (tests). */
  claims?: Record<string, unknown>;
}

/** A deterministic UID for a named object, so the same service account keeps its uid across tokens. */
export function stableUid(...parts: string[]): string {
  const h = createHash("sha256").update(parts.join("/")).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * A new RSA-2048 private key (the size kube-apiserver's service-account keys have), generated as PKCS#8
 * PEM and imported, so that no key-generation job shares the key's data: on Node 20, a garbage collection
 * that runs while the key is exported as a JWK and finalises the job that generated it deadlocks the
 * process (the job's destructor waits for the key's lock, which the export holds; seen as a hung test
 * worker, stack `KeyObjectHandle::ExportJWK` -> GC -> `~KeyGenJob` -> `uv_mutex_lock`).
 */
function newRsaKey(): KeyObject {
  const pem = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  }).privateKey;
  return createPrivateKey(pem);
}

/** One issuer: signing keys (the first signs), its issuer URL, discovery and JWKS documents. */
export class LocalIssuer {
  /** The `iss` claim and discovery `issuer`. */
  issuer: string;
  /** Signing keys; `keys[0]` signs new tokens, all are published. */
  keys: KeyObject[];
  /** How many discovery and JWKS requests it has served (tests count fetches with it). */
  readonly served = { discovery: 0, jwks: 0 };

  /**
   * @param issuer the issuer URL (discovery lives at `<issuer>/.well-known/openid-configuration`)
   * @param keys RSA private keys; one 2048-bit key is generated when omitted
   */
  constructor(issuer: string, keys?: KeyObject[]) {
    this.issuer = issuer;
    this.keys = keys ?? [newRsaKey()];
  }

  /** The `kid` of the active signing key. */
  get kid(): string {
    return kubernetesKeyId(this.keys[0]!);
  }

  /** Adds a new signing key in front (rotation); the old ones stay published until removed. */
  rotate(): KeyObject {
    const key = newRsaKey();
    this.keys = [key, ...this.keys];
    return key;
  }

  /** kube-apiserver's discovery document: exactly these five fields. */
  discovery(): Record<string, unknown> {
    return {
      issuer: this.issuer,
      jwks_uri: `${this.issuer.replace(/\/+$/, "")}/openid/v1/jwks`,
      response_types_supported: ["id_token"],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: ["RS256"],
    };
  }

  /** kube-apiserver's JWKS: `{keys:[{use, kty, kid, alg, n, e}]}`. */
  jwks(): { keys: Array<Record<string, unknown>> } {
    return {
      keys: this.keys.map((k) => {
        const { n, e } = createPublicKey(k).export({ format: "jwk" }) as { n: string; e: string };
        return { use: "sig", kty: "RSA", kid: kubernetesKeyId(k), alg: "RS256", n, e };
      }),
    };
  }

  /** Mints a bound service-account token with Kubernetes' claim layout. */
  async mint(req: LocalTokenRequest): Promise<string> {
    const now = Math.floor((req.nowMs ?? Date.now()) / 1000);
    const ttl = req.ttlSeconds ?? 3600;
    const podName = req.podName === undefined ? `${req.serviceAccount}-pod` : req.podName;
    // Key order as kube-apiserver v1.36 writes it (test/fixtures/kubernetes-1.36): namespace, node, pod,
    // serviceaccount.
    const k8s: Record<string, unknown> = { namespace: req.namespace };
    if (req.nodeName) k8s.node = { name: req.nodeName, uid: stableUid(this.issuer, "node", req.nodeName) };
    if (podName !== null)
      k8s.pod = { name: podName, uid: stableUid(this.issuer, req.namespace, "pod", podName) };
    k8s.serviceaccount = {
      name: req.serviceAccount,
      uid: stableUid(this.issuer, req.namespace, "sa", req.serviceAccount),
    };
    const header: Record<string, unknown> = { alg: "RS256", kid: this.kid };
    if (req.header && "kid" in req.header) {
      if (req.header.kid === undefined) delete header.kid;
      else header.kid = req.header.kid;
    }
    return new SignJWT({
      aud: req.audiences,
      exp: now + ttl,
      iat: now,
      iss: this.issuer,
      jti: randomUUID(),
      "kubernetes.io": k8s,
      nbf: now,
      sub: `system:serviceaccount:${req.namespace}:${req.serviceAccount}`,
      ...req.claims,
    })
      .setProtectedHeader(header as { alg: string })
      .sign(this.keys[0]!);
  }

  /**
   * Serves discovery and JWKS under `prefix` (the issuer URL's path) on `app`, with kube-apiserver's
   * headers: `Content-Type: application/json` / `application/jwk-set+json`,
   * `Cache-Control: public, max-age=3600`.
   */
  register(app: FastifyInstance, prefix = ""): void {
    app.get(`${prefix}/.well-known/openid-configuration`, async (_req, reply) => {
      this.served.discovery++;
      return reply
        .type("application/json")
        .header("cache-control", "public, max-age=3600")
        .send(this.discovery());
    });
    app.get(`${prefix}/openid/v1/jwks`, async (_req, reply) => {
      this.served.jwks++;
      return reply
        .type("application/jwk-set+json")
        .header("cache-control", "public, max-age=3600")
        .send(this.jwks());
    });
  }

  /** Saves the issuer (URL + private keys, PKCS#8 PEM) to `file` (mode 0600). */
  save(file: string): void {
    const keys = this.keys.map((k) => k.export({ type: "pkcs8", format: "pem" }) as string);
    writeFileSync(file, JSON.stringify({ issuer: this.issuer, keys }, null, 2), { mode: 0o600 });
  }

  /**
   * Loads an issuer saved by {@link save}.
   * @throws {Error} when the file is missing or malformed
   */
  static load(file: string): LocalIssuer {
    const doc = JSON.parse(readFileSync(file, "utf8")) as { issuer: string; keys: string[] };
    return new LocalIssuer(
      doc.issuer,
      doc.keys.map((k) => createPrivateKey(k)),
    );
  }

  /** Loads the issuer from `dir/issuer.json`, or creates and saves one for `issuer`. */
  static loadOrCreate(dir: string, issuer: string): LocalIssuer {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "issuer.json");
    if (existsSync(file)) {
      const loaded = LocalIssuer.load(file);
      if (loaded.issuer === issuer) return loaded;
      const moved = new LocalIssuer(issuer, loaded.keys);
      moved.save(file);
      return moved;
    }
    const created = new LocalIssuer(issuer);
    created.save(file);
    return created;
  }
}

/**
 * Starts a standalone issuer server on 127.0.0.1 (tests, e2e). The issuer URL is its base URL.
 * @param port 0 = any free port
 * @returns the issuer and a function that stops the server
 */
export async function startLocalIssuerServer(
  port = 0,
  path = "",
): Promise<{ issuer: LocalIssuer; url: string; app: FastifyInstance; close: () => Promise<void> }> {
  const app = Fastify({ logger: false });
  // The issuer URL needs the port, known only after listening: create with a placeholder, then set it.
  const issuer = new LocalIssuer("http://127.0.0.1");
  issuer.register(app, path);
  await app.listen({ host: "127.0.0.1", port });
  const address = app.server.address();
  const actualPort = typeof address === "object" && address ? address.port : port;
  const url = `http://127.0.0.1:${actualPort}${path}`;
  issuer.issuer = url;
  return { issuer, url, app, close: () => app.close() };
}
