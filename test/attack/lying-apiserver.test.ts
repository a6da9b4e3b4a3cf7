/**
 * Attack: a lying API server (or whatever answers at `clusters[].apiServer.url`) with
 * `verification: both` and `annotations: fromCluster`. Each answer below says `authenticated: true` (or
 * serves a ServiceAccount) but disagrees with the token in one field; the service must refuse with
 * 401 `token_review_refused` (docs/tokenreview.md: `status.user` must agree with the token's claims,
 * kubernetes pkg/serviceaccount/claims.go; a ServiceAccount's `metadata.uid` must be the token's).
 * These held when tried; they are kept as the threat model's evidence.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { credentialProvider, type ReviewEnv, reviewEnv, TOKENS, tokenGet } from "../helpers/tokenreview.js";

type Json = Record<string, unknown>;

/** A loopback HTTP server answering TokenReviews with `review(spec)` and ServiceAccount reads with `sa`. */
async function lyingApiServer(
  review: (spec: { token: string; audiences: string[] }) => Json,
  sa?: (namespace: string, name: string) => Json,
): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      if (req.method === "POST") {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as {
          spec: { token: string; audiences: string[] };
        };
        res.end(
          JSON.stringify({
            apiVersion: "authentication.k8s.io/v1",
            kind: "TokenReview",
            status: review(body.spec),
          }),
        );
        return;
      }
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/serviceaccounts\/([^/]+)$/.exec(req.url ?? "");
      res.end(JSON.stringify(m && sa ? sa(m[1]!, m[2]!) : {}));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

function claimsOf(token: string): Json & { "kubernetes.io": Json } {
  return JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
}

/** What a truthful API server answers for `token` (v1.36 shape), before `lie` changes it. */
function truthful(spec: { token: string; audiences: string[] }): Json & { user: Json & { extra: Json } } {
  const c = claimsOf(spec.token);
  const k = c["kubernetes.io"] as {
    serviceaccount: { uid: string };
    pod?: { name: string; uid: string };
    node?: { name: string; uid: string };
  };
  const extra: Record<string, string[]> = {
    "authentication.kubernetes.io/credential-id": [`JTI=${String(c.jti)}`],
  };
  if (k.pod) {
    extra["authentication.kubernetes.io/pod-name"] = [k.pod.name];
    extra["authentication.kubernetes.io/pod-uid"] = [k.pod.uid];
  }
  if (k.node) {
    extra["authentication.kubernetes.io/node-name"] = [k.node.name];
    extra["authentication.kubernetes.io/node-uid"] = [k.node.uid];
  }
  return {
    authenticated: true,
    user: { username: String(c.sub), uid: k.serviceaccount.uid, groups: ["system:serviceaccounts"], extra },
    audiences: spec.audiences,
  };
}

let env: ReviewEnv | undefined;
let api: { url: string; close: () => Promise<void> } | undefined;
afterEach(async () => {
  await env?.close();
  await api?.close();
  env = undefined;
  api = undefined;
});

const LIES: Array<[string, (a: ReturnType<typeof truthful>) => void]> = [
  [
    "another user",
    (a) => {
      a.user.username = "system:serviceaccount:kube-system:admin";
    },
  ],
  [
    "another uid",
    (a) => {
      a.user.uid = "00000000-0000-0000-0000-000000000000";
    },
  ],
  [
    "another audience",
    (a) => {
      a.audiences = ["kubernetes.default.svc"];
    },
  ],
  [
    "no audiences",
    (a) => {
      delete a.audiences;
    },
  ],
  [
    "another pod",
    (a) => {
      a.user.extra["authentication.kubernetes.io/pod-name"] = ["other-pod"];
    },
  ],
  [
    "two pod uids",
    (a) => {
      a.user.extra["authentication.kubernetes.io/pod-uid"] = ["a", "b"];
    },
  ],
  [
    "another credential id",
    (a) => {
      a.user.extra["authentication.kubernetes.io/credential-id"] = ["JTI=x"];
    },
  ],
  [
    "authenticated as a string",
    (a) => {
      a.authenticated = "true";
    },
  ],
];

describe("a lying API server cannot authenticate a token as something else", () => {
  it("a truthful answer is accepted (control)", async () => {
    api = await lyingApiServer(truthful);
    env = await reviewEnv({ apiServer: { url: api.url } });
    expect((await tokenGet(env.app, TOKENS.podBound)).statusCode).toBe(200);
  });

  it.each(LIES)(
    "TokenReview answering authenticated with %s: 401 token_review_refused",
    async (_name, lie) => {
      api = await lyingApiServer((spec) => {
        const a = truthful(spec);
        lie(a);
        return a;
      });
      env = await reviewEnv({ apiServer: { url: api.url } });
      const res = await tokenGet(env.app, TOKENS.podBound);
      expect(res.statusCode, res.body).toBe(401);
      expect(res.json().errors[0].detail.reason).toBe("token_review_refused");
    },
  );

  it("a ServiceAccount with another uid (or another account's object) gives no annotations: 401", async () => {
    const uid = (claimsOf(TOKENS.credentialProvider)["kubernetes.io"] as { serviceaccount: { uid: string } })
      .serviceaccount.uid;
    for (const object of [
      {
        kind: "ServiceAccount",
        metadata: { namespace: "team-a", name: "x", uid: "recreated-uid", annotations: {} },
      },
      { kind: "ServiceAccount", metadata: { namespace: "team-a", name: "x", uid: `${uid} ` } },
    ]) {
      api = await lyingApiServer(truthful, () => object);
      env = await reviewEnv({ apiServer: { url: api.url }, annotations: "fromCluster" });
      const res = await credentialProvider(env.app, TOKENS.credentialProvider);
      expect(res.statusCode, res.body).toBe(401);
      expect(res.body).toContain("token_review_refused");
      await env.close();
      await api.close();
      env = undefined;
      api = undefined;
    }
  });
});
