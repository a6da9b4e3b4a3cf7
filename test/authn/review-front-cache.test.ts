/**
 * The in-process front cache of opened review answers (`authn/review.ts`), with a frozen clock against the
 * stand-in API server: a hit is used only until the answer's own expiry (`review.cacheTtlSeconds`, never
 * past the token's expiry), then the cluster is asked again and its refusal holds; it never answers for
 * other audiences; `cacheTtlSeconds: 0` caches nothing; credentials derived from a reviewed token follow
 * the same bound.
 */
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ClusterReviewer } from "../../src/authn/review.js";
import { type Identity, OWN_KEY_PREFIX } from "../../src/authn/verify.js";
import { CacheSealer } from "../../src/cache/seal.js";
import { MemoryStore } from "../../src/cache/store.js";
import { RequestError } from "../../src/errors.js";
import { SERVICE } from "../helpers/fixtures.js";
import { podUidOf, type ReviewEnv, reviewEnv, TOKENS, TR_NOW } from "../helpers/tokenreview.js";

let env: ReviewEnv | undefined;
let reviewer: ClusterReviewer | undefined;
afterEach(async () => {
  await reviewer?.close();
  await env?.close();
  env = undefined;
  reviewer = undefined;
});

/** The identity offline verification gives the pod-bound fixture token (its claims, unchanged). */
function podBoundIdentity(): Identity {
  const claims = JSON.parse(Buffer.from(TOKENS.podBound.split(".")[1]!, "base64url").toString()) as {
    sub: string;
    aud: string[];
    exp: number;
    iat: number;
    jti: string;
    "kubernetes.io": {
      namespace: string;
      serviceaccount: { name: string; uid: string };
      pod: { name: string; uid: string };
      node: { name: string; uid: string };
    };
  };
  const k = claims["kubernetes.io"];
  return {
    cluster: "kind",
    namespace: k.namespace,
    serviceAccount: k.serviceaccount,
    pod: k.pod,
    node: k.node,
    subject: claims.sub,
    audiences: claims.aud,
    expiresAt: claims.exp,
    issuedAt: claims.iat,
    tokenId: claims.jti,
    verificationKey: "cluster-key-fingerprint",
  };
}

/**
 * A reviewer for the `kind` cluster of a {@link reviewEnv} (review cache `cacheTtlSeconds`), with its own
 * memory store and the same frozen clock as the stand-in API server.
 */
async function setUp(cacheTtlSeconds = 10) {
  env = await reviewEnv({ review: { cacheTtlSeconds, timeoutMs: 500 } });
  const e = env;
  let clock = TR_NOW;
  const now = () => clock;
  const sealer = CacheSealer.ephemeral();
  reviewer = new ClusterReviewer({
    config: e.config,
    store: new MemoryStore({ maxEntries: 100, now }),
    sealer,
    logger: pino({ level: "silent" }),
    now,
  });
  return {
    reviewer,
    api: e.api,
    sealer,
    advance: (ms: number) => {
      clock += ms;
      e.advance(ms);
    },
  };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RequestError);
  return (err as RequestError).code;
}

/**
 * Reviews the pod-bound token as `identity`: the answer is cached 1 ms before `untilMs` (one API call);
 * then the pod is deleted and, 1 ms past `untilMs`, the cluster is asked again and its refusal holds.
 */
async function expectCachedUntil(identity: ReturnType<typeof podBoundIdentity>, untilMs: number) {
  const { reviewer, api, advance } = await setUp();
  expect((await reviewer.review(TOKENS.podBound, identity, [SERVICE], false)).cached).toBe(false);
  advance(untilMs - 1);
  expect((await reviewer.review(TOKENS.podBound, identity, [SERVICE], false)).cached).toBe(true);
  expect(api.reviews()).toBe(1);
  api.deletePod(podUidOf(TOKENS.podBound));
  advance(2);
  expect(await refusal(reviewer.review(TOKENS.podBound, identity, [SERVICE], false))).toBe(
    "token_review_refused",
  );
  expect(api.reviews()).toBe(2);
}

describe("review front cache", () => {
  it("answers from memory until review.cacheTtlSeconds, then asks again and the cluster's refusal holds", async () => {
    await expectCachedUntil(podBoundIdentity(), 10_000);
  });

  it("never past the token's expiry, even when it comes before the cache TTL", async () => {
    // As a `kubernetes.io.warnafter` earlier than `exp` would: accepted here for 5 more seconds.
    await expectCachedUntil({ ...podBoundIdentity(), expiresAt: TR_NOW / 1000 + 5 }, 5_000);
  });

  it("never answers for other audiences than those the answer was given for", async () => {
    const { reviewer, api } = await setUp();
    const identity = podBoundIdentity();
    await reviewer.review(TOKENS.podBound, identity, [SERVICE], false);
    const other = await reviewer.review(TOKENS.podBound, identity, [SERVICE, "other.audience"], false);
    expect(other.cached).toBe(false);
    expect(api.reviews()).toBe(2);
  });

  it("caches nothing with cacheTtlSeconds: 0", async () => {
    const { reviewer, api } = await setUp(0);
    const identity = podBoundIdentity();
    for (let i = 0; i < 3; i++) {
      expect((await reviewer.review(TOKENS.podBound, identity, [SERVICE], false)).cached).toBe(false);
    }
    expect(api.reviews()).toBe(3);
  });

  it("a derived credential's source answers from memory within the same bound", async () => {
    const { reviewer, api, advance } = await setUp();
    const derived: Identity = {
      ...podBoundIdentity(),
      tokenId: "exchange-credential-jti",
      verificationKey: `${OWN_KEY_PREFIX}registry-kid`,
      reviewSource: reviewer.sealSource(TOKENS.podBound, [SERVICE]),
    };
    const first = await reviewer.review("the-exchange-credential", derived, [], true);
    expect(first).toMatchObject({ cached: false, derived: true });
    advance(9_999);
    expect((await reviewer.review("the-exchange-credential", derived, [], true)).cached).toBe(true);
    expect(api.reviews()).toBe(1);
    api.deletePod(podUidOf(TOKENS.podBound));
    advance(2);
    expect(await refusal(reviewer.review("the-exchange-credential", derived, [], true))).toBe(
      "token_review_refused",
    );
    // A source that does not open is refused, whatever was remembered for the others.
    const sealed = derived.reviewSource!;
    const altered = {
      ...derived,
      reviewSource: `${sealed.slice(0, 20)}${sealed[20] === "A" ? "B" : "A"}${sealed.slice(21)}`,
    };
    expect(await refusal(reviewer.review("the-exchange-credential", altered, [], true))).toBe(
      "token_review_refused",
    );
    expect(api.reviews()).toBe(2);
  });
});
