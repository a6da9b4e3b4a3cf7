/**
 * Compact JWS with node:crypto (src/jose/jws.ts, src/jose/sign.ts): the RFC 7515 A.3 ES256 vector, interoperability with
 * jose in both directions for every algorithm, every way a signature must fail, the format errors, and
 * the registered-claim checks at their exact boundaries.
 */
import { createPublicKey, generateKeyPairSync, type JsonWebKeyInput, type KeyObject } from "node:crypto";
import { compactVerify, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import {
  checkClaims,
  decodeCompactJws,
  type JwsAlgorithm,
  JwsFormatError,
  keyFitsAlgorithm,
  verifyJwsSignature,
} from "../../src/jose/jws.js";
import { base64urlJson, signCompactJws } from "../../src/jose/sign.js";

// RFC 7515 Appendix A.3: ES256, the JWK of Figure 21 (public part) and the JWS of A.3.1.
const RFC7515_A3 = {
  jwk: {
    kty: "EC",
    crv: "P-256",
    x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
  },
  token:
    "eyJhbGciOiJFUzI1NiJ9." +
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ." +
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
};

const KEYS: Record<JwsAlgorithm, { privateKey: KeyObject; publicKey: KeyObject }> = {
  RS256: generateKeyPairSync("rsa", { modulusLength: 2048 }),
  RS384: generateKeyPairSync("rsa", { modulusLength: 2048 }),
  RS512: generateKeyPairSync("rsa", { modulusLength: 2048 }),
  ES256: generateKeyPairSync("ec", { namedCurve: "P-256" }),
  ES384: generateKeyPairSync("ec", { namedCurve: "P-384" }),
  ES512: generateKeyPairSync("ec", { namedCurve: "P-521" }),
};
const ALGORITHMS = Object.keys(KEYS) as JwsAlgorithm[];

function header(alg: JwsAlgorithm, extra: Record<string, unknown> = {}): string {
  return base64urlJson({ alg, typ: "JWT", ...extra });
}

describe("signature verification", () => {
  it("verifies the RFC 7515 A.3 ES256 example and refuses it with one bit changed", () => {
    const key = createPublicKey({ key: RFC7515_A3.jwk, format: "jwk" } as JsonWebKeyInput);
    const jws = decodeCompactJws(RFC7515_A3.token);
    expect(jws.header).toEqual({ alg: "ES256" });
    expect(jws.payload).toEqual({ iss: "joe", exp: 1300819380, "http://example.com/is_root": true });
    expect(verifyJwsSignature(jws, "ES256", key)).toBe(true);
    const tampered = decodeCompactJws(`${RFC7515_A3.token.slice(0, -1)}A`);
    expect(verifyJwsSignature(tampered, "ES256", key)).toBe(false);
  });

  it.each(ALGORITHMS)(
    "%s: what jose signs verifies here, and what this signs verifies in jose",
    async (alg) => {
      const { privateKey, publicKey } = KEYS[alg];
      const byJose = await new SignJWT({ sub: "x" }).setProtectedHeader({ alg }).sign(privateKey);
      expect(verifyJwsSignature(decodeCompactJws(byJose), alg, publicKey)).toBe(true);
      const ours = signCompactJws(header(alg), { sub: "y", n: 1 }, alg, privateKey);
      const { payload, protectedHeader } = await compactVerify(ours, publicKey, { algorithms: [alg] });
      expect(protectedHeader).toEqual({ alg, typ: "JWT" });
      expect(JSON.parse(Buffer.from(payload).toString())).toEqual({ sub: "y", n: 1 });
      expect(verifyJwsSignature(decodeCompactJws(ours), alg, publicKey)).toBe(true);
    },
  );

  it.each(ALGORITHMS)("%s: a changed payload, another key, or no signature does not verify", (alg) => {
    const { privateKey, publicKey } = KEYS[alg];
    const token = signCompactJws(header(alg), { sub: "a" }, alg, privateKey);
    const [h, , s] = token.split(".");
    const changed = decodeCompactJws(`${h}.${base64urlJson({ sub: "b" })}.${s}`);
    expect(verifyJwsSignature(changed, alg, publicKey)).toBe(false);
    const other = alg.startsWith("RS")
      ? generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey
      : generateKeyPairSync("ec", { namedCurve: KEYS[alg].publicKey.asymmetricKeyDetails!.namedCurve! })
          .publicKey;
    expect(verifyJwsSignature(decodeCompactJws(token), alg, other)).toBe(false);
    expect(verifyJwsSignature(decodeCompactJws(`${h}.${token.split(".")[1]}.`), alg, publicKey)).toBe(false);
  });

  it("refuses a key of the wrong type or curve, whatever the signature", () => {
    const es256 = signCompactJws(header("ES256"), { sub: "a" }, "ES256", KEYS.ES256.privateKey);
    const rs256 = signCompactJws(header("RS256"), { sub: "a" }, "RS256", KEYS.RS256.privateKey);
    expect(verifyJwsSignature(decodeCompactJws(es256), "ES256", KEYS.ES384.publicKey)).toBe(false);
    expect(verifyJwsSignature(decodeCompactJws(es256), "RS256", KEYS.ES256.publicKey)).toBe(false);
    expect(verifyJwsSignature(decodeCompactJws(rs256), "ES256", KEYS.RS256.publicKey)).toBe(false);
    // The same RSA key under another hash: the signature is of SHA-256, not SHA-384.
    expect(verifyJwsSignature(decodeCompactJws(rs256), "RS384", KEYS.RS256.publicKey)).toBe(false);
    expect(keyFitsAlgorithm(KEYS.ES256.publicKey, "ES256")).toBe(true);
    expect(keyFitsAlgorithm(KEYS.ES256.publicKey, "ES512")).toBe(false);
    expect(keyFitsAlgorithm(KEYS.RS512.publicKey, "RS256")).toBe(true);
    expect(keyFitsAlgorithm(KEYS.RS512.publicKey, "ES256")).toBe(false);
    expect(keyFitsAlgorithm(generateKeyPairSync("ed25519").publicKey, "ES256")).toBe(false);
  });

  it("refuses an ECDSA signature in DER form (OpenSSL's default) or of the wrong length", () => {
    const token = signCompactJws(header("ES256"), { sub: "a" }, "ES256", KEYS.ES256.privateKey);
    const jws = decodeCompactJws(token);
    const r = jws.signature.subarray(0, 32);
    const s = jws.signature.subarray(32);
    const int = (b: Buffer) => {
      const v = b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
      return Buffer.concat([Buffer.from([0x02, v.length]), v]);
    };
    const body = Buffer.concat([int(r), int(s)]);
    const der = Buffer.concat([Buffer.from([0x30, body.length]), body]);
    expect(verifyJwsSignature({ ...jws, signature: der }, "ES256", KEYS.ES256.publicKey)).toBe(false);
    expect(
      verifyJwsSignature(
        { ...jws, signature: Buffer.concat([jws.signature, Buffer.alloc(1)]) },
        "ES256",
        KEYS.ES256.publicKey,
      ),
    ).toBe(false);
  });
});

describe("decoding", () => {
  const payload = base64urlJson({ sub: "a" });
  it.each([
    ["two parts", `${header("RS256")}.${payload}`, "not a compact JWS (expected header.payload.signature)"],
    [
      "four parts",
      `${header("RS256")}.${payload}.a.b`,
      "not a compact JWS (expected header.payload.signature)",
    ],
    [
      "padding",
      `${header("RS256")}.${payload}=.sig`,
      "not a compact JWS (expected header.payload.signature)",
    ],
    [
      "header not JSON",
      `${Buffer.from("{alg").toString("base64url")}.${payload}.sig`,
      "header is not base64url JSON",
    ],
    ["header an array", `${base64urlJson(["RS256"])}.${payload}.sig`, "header is not a JSON object"],
    ["payload null", `${header("RS256")}.${base64urlJson(null)}.sig`, "payload is not a JSON object"],
    ["payload a string", `${header("RS256")}.${base64urlJson("x")}.sig`, "payload is not a JSON object"],
    [
      "crit",
      `${header("RS256", { crit: ["exp"] })}.${payload}.sig`,
      'header has "crit" (no extension is supported)',
    ],
  ])("refuses %s", (_name, token, message) => {
    expect(() => decodeCompactJws(token)).toThrow(JwsFormatError);
    expect(() => decodeCompactJws(token)).toThrow(message);
  });

  it("keeps the signing input exactly as sent", () => {
    const token = `${header("RS256")}.${payload}.c2ln`;
    const jws = decodeCompactJws(token);
    expect(jws.signingInput).toBe(`${header("RS256")}.${payload}`);
    expect(jws.signature.toString()).toBe("sig");
  });
});

describe("registered claims", () => {
  const NOW = 1_800_000_000;
  const rules = {
    required: ["aud", "sub", "iat", "exp"],
    issuer: "https://issuer.example",
    audiences: ["registry", "other"],
    clockToleranceSeconds: 30,
    nowSeconds: NOW,
  };
  const good = { iss: rules.issuer, aud: ["registry"], sub: "s", iat: NOW - 10, exp: NOW + 600 };

  it.each([
    ["a good claims set", good, undefined],
    ["aud as a string", { ...good, aud: "other" }, undefined],
    ["aud with one accepted value among others", { ...good, aud: ["x", 3, "registry"] }, undefined],
    ["no aud (first required)", { ...good, aud: undefined, sub: undefined }, undefined],
    ["no sub", { ...good, sub: undefined }, { claim: "sub", reason: "missing" }],
    ["no iat", { ...good, iat: undefined }, { claim: "iat", reason: "missing" }],
    ["no exp", { ...good, exp: undefined }, { claim: "exp", reason: "missing" }],
    ["another iss", { ...good, iss: "https://issuer.example/" }, { claim: "iss", reason: "mismatch" }],
    ["aud not accepted", { ...good, aud: ["x"] }, { claim: "aud", reason: "mismatch" }],
    ["aud an object", { ...good, aud: { registry: true } }, { claim: "aud", reason: "mismatch" }],
    ["iat a string", { ...good, iat: "1" }, { claim: "iat", reason: "invalid" }],
    ["nbf a string", { ...good, nbf: "1" }, { claim: "nbf", reason: "invalid" }],
    ["exp a string", { ...good, exp: "1" }, { claim: "exp", reason: "invalid" }],
    ["nbf at now + tolerance", { ...good, nbf: NOW + 30 }, undefined],
    ["nbf one second later", { ...good, nbf: NOW + 31 }, { claim: "nbf", reason: "not_yet_valid" }],
    ["exp one second after now - tolerance", { ...good, exp: NOW - 29 }, undefined],
    ["exp at now - tolerance", { ...good, exp: NOW - 30 }, { claim: "exp", reason: "expired" }],
  ])("%s", (name, claims, expected) => {
    const payload = Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined));
    const result = checkClaims(payload, rules);
    if (name.startsWith("no aud")) expect(result).toEqual({ claim: "aud", reason: "missing" });
    else expect(result).toEqual(expected);
  });
});
