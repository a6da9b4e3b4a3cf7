/**
 * A stand-in kube-apiserver (a real node:http server) for the two calls this service makes, answering in
 * exactly the shapes a real kube-apiserver v1.36.2 served (test/fixtures/kubernetes-1.36/, compared
 * field for field in test/authn/apiserver-standin.test.ts):
 * - `POST /apis/authentication.k8s.io/v1/tokenreviews`: the request's `spec` echoed, `metadata.managedFields`
 *   (manager = the User-Agent's product, as the API server derives it), and a `status` computed the way
 *   kubernetes pkg/serviceaccount (claims.go, the JWT authenticator) does: signature against the fixture
 *   JWKS, expiry with the stand-in's clock, audiences, pod invalidation, service-account uid;
 * - `GET /api/v1/namespaces/{ns}/serviceaccounts/{name}`: the fixture ServiceAccount (or one the test set);
 * - errors as `metav1.Status` (apimachinery pkg/apis/meta/v1/types.go, pkg/api/errors/errors.go):
 *   `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message","reason","details","code"}`.
 * Tests switch it to failure modes (401, 403, 429 with Retry-After, 500, slow, down) and count calls.
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createLocalJWKSet, decodeJwt, type JSONWebKeySet, jwtVerify } from "jose";

/** Where the real API server captures live (copied unchanged from a kube-apiserver v1.36.2). */
export const K8S_FIXTURES = join(import.meta.dirname, "..", "fixtures", "kubernetes-1.36");

/** Reads a fixture file as text. */
export function k8sFixture(name: string): string {
  return readFileSync(join(K8S_FIXTURES, name), "utf8");
}

/** Reads a fixture file as JSON. */
export function k8sJson<T = Record<string, unknown>>(name: string): T {
  return JSON.parse(k8sFixture(name)) as T;
}

/** The issuer of the fixture tokens (the real API server's `--service-account-issuer`). */
export const K8S_ISSUER = "https://127.0.0.1:16443";
/** 2026-12-03T08:20:22Z: inside every fixture token's validity window, the time of the captured reviews. */
export const K8S_NOW = Date.UTC(2026, 11, 3, 8, 20, 22);

/** How the stand-in fails, when it does. */
export type ApiFailure =
  | { status: 401 | 403 | 500 }
  | { status: 429; retryAfterSeconds: number }
  | { slowMs: number };

/** One request the stand-in received. */
interface ApiRequest {
  method: string;
  path: string;
  authorization: string | undefined;
  userAgent: string | undefined;
  body: unknown;
}

/** A running stand-in. */
export interface StandInApiServer {
  url: string;
  /** Every request, in order. */
  requests: ApiRequest[];
  /** TokenReviews received. */
  reviews: () => number;
  /** ServiceAccount GETs received. */
  serviceAccountReads: () => number;
  /** Make every call fail this way (undefined: answer normally). */
  fail: ApiFailure | undefined;
  /** Delete a pod: tokens bound to its uid are invalidated (after the API server's own cache). */
  deletePod: (podUid: string) => void;
  /** Delete and recreate a ServiceAccount under the same name: a new uid. */
  recreateServiceAccount: (namespace: string, name: string, uid: string) => void;
  /** Replace a ServiceAccount's annotations. */
  setAnnotations: (namespace: string, name: string, annotations: Record<string, string>) => void;
  /** Stop listening (connections refused) / listen again on the same port. */
  stop: () => Promise<void>;
  start: () => Promise<void>;
  close: () => Promise<void>;
}

const STATUS_REASON: Record<number, string> = {
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  429: "TooManyRequests",
  500: "InternalError",
};

/** A `metav1.Status` failure body. */
function statusBody(code: number, message: string, details?: Record<string, unknown>) {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason: STATUS_REASON[code] ?? "Unknown",
    ...(details ? { details } : {}),
    code,
  };
}

interface SaState {
  object: Record<string, unknown>;
}

/** Options of {@link startStandInApiServer} beyond the clock (the benchmark uses them). */
export interface StandInOptions {
  /** The service-account signing keys (default: the fixture JWKS); read per review (rotations). */
  jwks?: () => JSONWebKeySet;
  /** Treat every service account as existing with the uid its token claims (default: only the fixture's). */
  anyServiceAccount?: boolean;
  /** Serve HTTPS with this PEM certificate and key (as a real API server does); default plain HTTP. */
  tls?: { certFile: string; keyFile: string };
}

/**
 * Starts a stand-in API server on 127.0.0.1.
 * @param now the API server's clock, epoch ms (frozen in tests)
 * @param options signing keys and service accounts (defaults: the fixtures')
 */
export async function startStandInApiServer(
  now: () => number = () => K8S_NOW,
  options: StandInOptions = {},
): Promise<StandInApiServer> {
  const fixtureKeys = createLocalJWKSet(k8sJson<JSONWebKeySet>("jwks.json"));
  const keys = () => (options.jwks ? createLocalJWKSet(options.jwks()) : fixtureKeys);
  const deletedPods = new Set<string>();
  const accounts = new Map<string, SaState>();
  const fixtureSa = k8sJson("serviceaccount.json");
  const meta = fixtureSa.metadata as { namespace: string; name: string };
  accounts.set(`${meta.namespace}/${meta.name}`, { object: fixtureSa });
  let reviews = 0;
  let saReads = 0;

  const api: StandInApiServer = {
    url: "",
    requests: [],
    reviews: () => reviews,
    serviceAccountReads: () => saReads,
    fail: undefined,
    deletePod: (uid) => deletedPods.add(uid),
    recreateServiceAccount: (namespace, name, uid) => {
      const prev = accounts.get(`${namespace}/${name}`)?.object ?? fixtureSa;
      const object = structuredClone(prev);
      (object.metadata as Record<string, unknown>).uid = uid;
      accounts.set(`${namespace}/${name}`, { object });
    },
    setAnnotations: (namespace, name, annotations) => {
      const state = accounts.get(`${namespace}/${name}`);
      if (state) (state.object.metadata as Record<string, unknown>).annotations = annotations;
    },
    stop: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
    },
    start: async () => {
      await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
    },
    close: async () => {
      server.closeAllConnections();
      if (server.listening) await new Promise<void>((r) => server.close(() => r()));
    },
  };

  async function review(body: Record<string, unknown>, userAgent: string | undefined) {
    const spec = (body.spec ?? {}) as { token?: string; audiences?: string[] };
    const audiences = spec.audiences ?? [];
    const answer = {
      kind: "TokenReview",
      apiVersion: "authentication.k8s.io/v1",
      metadata: {
        managedFields: [
          {
            manager: (userAgent ?? "unknown").split("/")[0],
            operation: "Update",
            apiVersion: "authentication.k8s.io/v1",
            time: new Date(Math.floor(now() / 1000) * 1000).toISOString().replace(".000Z", "Z"),
            fieldsType: "FieldsV1",
            fieldsV1: { "f:spec": { "f:audiences": {}, "f:token": {} } },
          },
        ],
      },
      spec,
      status: {} as Record<string, unknown>,
    };
    const refuse = (why: string) => {
      answer.status = { user: {}, error: `[invalid bearer token, ${why}]` };
      return answer;
    };
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(spec.token ?? "", keys(), {
        currentDate: new Date(now()),
        algorithms: ["RS256"],
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      return refuse(
        code === "ERR_JWT_EXPIRED"
          ? "service account token has expired"
          : "square/go-jose: error in cryptographic primitive",
      );
    }
    const tokenAud = (Array.isArray(claims.aud) ? claims.aud : [claims.aud]) as string[];
    const matched = audiences.filter((a) => tokenAud.includes(a));
    if (audiences.length > 0 && matched.length === 0) {
      return refuse(
        `token audiences ${JSON.stringify(tokenAud).replaceAll(",", " ")} is invalid for the target audiences ${JSON.stringify(audiences).replaceAll(",", " ")}`,
      );
    }
    const k = claims["kubernetes.io"] as {
      namespace: string;
      serviceaccount: { name: string; uid: string };
      pod?: { name: string; uid: string };
      node?: { name: string; uid: string };
    };
    const sa = accounts.get(`${k.namespace}/${k.serviceaccount.name}`);
    const saUid = options.anyServiceAccount
      ? k.serviceaccount.uid
      : (sa?.object.metadata as { uid?: string } | undefined)?.uid;
    if (saUid !== k.serviceaccount.uid) {
      return refuse(`service account UID (${saUid}) does not match claim (${k.serviceaccount.uid})`);
    }
    if (k.pod && deletedPods.has(k.pod.uid)) return refuse("service account token has been invalidated");
    const extra: Record<string, string[]> = {};
    if (typeof claims.jti === "string")
      extra["authentication.kubernetes.io/credential-id"] = [`JTI=${claims.jti}`];
    if (k.node) {
      extra["authentication.kubernetes.io/node-name"] = [k.node.name];
      extra["authentication.kubernetes.io/node-uid"] = [k.node.uid];
    }
    if (k.pod) {
      extra["authentication.kubernetes.io/pod-name"] = [k.pod.name];
      extra["authentication.kubernetes.io/pod-uid"] = [k.pod.uid];
    }
    answer.status = {
      authenticated: true,
      user: {
        username: `system:serviceaccount:${k.namespace}:${k.serviceaccount.name}`,
        uid: k.serviceaccount.uid,
        groups: ["system:serviceaccounts", `system:serviceaccounts:${k.namespace}`, "system:authenticated"],
        extra,
      },
      audiences: audiences.length > 0 ? matched : tokenAud,
    };
    return answer;
  }

  function send(
    res: ServerResponse,
    code: number,
    body: unknown,
    userAgent: string | undefined,
    headers = {},
  ) {
    // The API server pretty-prints JSON for curl and wget (the fixtures were captured with curl).
    const pretty = /^(curl|wget)\//i.test(userAgent ?? "");
    const text = pretty ? `${JSON.stringify(body, null, 2)}\n` : JSON.stringify(body);
    res.writeHead(code, { "content-type": "application/json", ...headers });
    res.end(text);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      body = raw;
    }
    const path = (req.url ?? "/").split("?")[0]!;
    const ua = req.headers["user-agent"];
    api.requests.push({
      method: req.method ?? "",
      path,
      authorization: req.headers.authorization,
      userAgent: ua,
      body,
    });
    const isReview = req.method === "POST" && path === "/apis/authentication.k8s.io/v1/tokenreviews";
    const sa = /^\/api\/v1\/namespaces\/([^/]+)\/serviceaccounts\/([^/]+)$/.exec(path);
    if (isReview) reviews++;
    if (sa && req.method === "GET") saReads++;
    const failure = api.fail;
    if (failure && "slowMs" in failure) await new Promise((r) => setTimeout(r, failure.slowMs));
    else if (failure) {
      const resource = isReview ? "tokenreviews" : "serviceaccounts";
      const group = isReview ? "authentication.k8s.io" : "";
      switch (failure.status) {
        case 401:
          return send(res, 401, statusBody(401, "Unauthorized"), ua);
        case 403:
          return send(
            res,
            403,
            statusBody(
              403,
              `${resource}${group ? `.${group}` : ""} is forbidden: User "system:serviceaccount:registry-token-exchange:registry-token-exchange" cannot ${isReview ? "create" : "get"} resource "${resource}" in API group "${group}" ${isReview ? "at the cluster scope" : `in the namespace "${sa?.[1]}"`}`,
              { ...(group ? { group } : {}), kind: resource },
            ),
            ua,
          );
        case 429:
          return send(
            res,
            429,
            statusBody(429, "Too many requests, please try again later.", {
              retryAfterSeconds: failure.retryAfterSeconds,
            }),
            ua,
            { "retry-after": String(failure.retryAfterSeconds) },
          );
        default:
          return send(
            res,
            500,
            statusBody(500, "Internal error occurred: etcdserver: request timed out"),
            ua,
          );
      }
    }
    if (isReview) return send(res, 201, await review(body as Record<string, unknown>, ua), ua);
    if (sa && req.method === "GET") {
      const state = accounts.get(`${sa[1]}/${sa[2]}`);
      if (!state) {
        return send(
          res,
          404,
          statusBody(404, `serviceaccounts "${sa[2]}" not found`, { name: sa[2], kind: "serviceaccounts" }),
          ua,
        );
      }
      return send(res, 200, state.object, ua);
    }
    return send(res, 404, statusBody(404, "the server could not find the requested resource", {}), ua);
  }

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  };
  const server: Server = options.tls
    ? createHttpsServer(
        { cert: readFileSync(options.tls.certFile), key: readFileSync(options.tls.keyFile) },
        handler,
      )
    : createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  api.url = `${options.tls ? "https" : "http"}://127.0.0.1:${port}`;
  return api;
}

/** The claims of a fixture token (unverified; the stand-in and the service verify them). */
export function fixtureClaims(name: string): Record<string, unknown> {
  return decodeJwt(k8sFixture(name).trim()) as Record<string, unknown>;
}
