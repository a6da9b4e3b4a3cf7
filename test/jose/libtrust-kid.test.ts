/**
 * The libtrust key ID (src/jose/kid.ts) that distribution v2.8 matches a token's `kid` against:
 * SHA-256 of the DER SPKI, first 30 bytes, base32 without padding, 12 groups of 4 joined by `:`.
 * Vectors: the test fixtures of realityone/libtrust-py (tests/fixtures/public.pem and ec-public.pem with
 * tests/test_rsa_key.py and tests/test_ec_key.py), a port of docker/libtrust's keyIDFromCryptoKey.
 */
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { calculateJwkThumbprint, type JWK } from "jose";
import { describe, expect, it } from "vitest";
import { libtrustKeyId } from "../../src/jose/kid.js";

const LIBTRUST_RSA_PUBLIC = `-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAwq1mCmgn460MC6MnCqra
nQNTgmKuKPl7bNH7Qc6hBDGHlnIjU6q/h2KXF37TC5Y9tsKvQ4b8jd0Sf0dXFHml
8qunSvNnqsSvoD8tSPUKqXS6jrlbGSQXhya7BL1RPGccD5K1xrV73QlI6uFPd3AP
RQYij5EOB8IOWEQujJk/8Mjc0EC9zvk5TUJb59hkOUPZ3CkvSBNLNS8wpQI98FRn
IzHjuaNicqve8054oxmDKifHWy0nnF135cXW8zkH3Zto1q89zD2g+zcVxLcRP84U
he0nSQyg7vEYl4Wl74Eo6/89qL2yE0mEiQN245ACA5B8WFV/t3j/OD3ydOCaAOg2
8vQtzcZ1gh2Ev4RxeR7bKq58g+R0+MMwl7nnW29mbCkcgdVVR4YPmglP7Vb6w7/N
bqFhnxx4E3A05AeevHdMdYCrtgQwogvIhdOHLcVQxJgwy1d2Lg/mv9rovhCJ7d3X
aNEYym6CplCHPMtfnU1LCVkA6b44pFaOVjsAQ8FviFtGXQAToRtwoszSarzslHKY
dPoSGFOsgNJgW67iViOYqGPD97rgJA0VPm0POMNHGw/R6o+08KhDF/OI1EDckmjX
hUggY/WCqWDxD77Ezd/wr9Zlbv/uSIEL9ifvBLq06lLcXMLrQbJrwMbDrngMZMAc
UkTzThmtxNs4uwu45R+zfKcCAwEAAQ==
-----END PUBLIC KEY-----
`;
const LIBTRUST_RSA_KID = "IIYO:OWAZ:MBMG:2SIK:IK2I:OP5Z:H6QR:KN6Y:QUGO:BUWN:TYW3:JXVW";

const LIBTRUST_EC_PUBLIC = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4pBqYlc5IU5pJh5AOvijtEccStyJ
u0dSAiz4OlDGGFk5PvSlSh+wqUcSyp1ZRSP5kX7Pluof72g5MniaoFrLKg==
-----END PUBLIC KEY-----
`;
const LIBTRUST_EC_KID = "UEV2:PPF2:4DMU:WZYF:WOWU:677P:B7XU:SGFA:BMUG:NCTC:R7CL:XFKZ";

const FORMAT = /^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$/;

describe("libtrustKeyId: published vectors", () => {
  it.each([
    ["RSA 4096 public key", LIBTRUST_RSA_PUBLIC, LIBTRUST_RSA_KID],
    ["ECDSA P-256 public key", LIBTRUST_EC_PUBLIC, LIBTRUST_EC_KID],
  ])("%s", (_name, pem, kid) => {
    expect(libtrustKeyId(createPublicKey(pem))).toBe(kid);
  });

  it("the same key imported from its JWK gives the same ID", () => {
    const jwk = createPublicKey(LIBTRUST_EC_PUBLIC).export({ format: "jwk" });
    expect(libtrustKeyId(createPublicKey({ key: jwk, format: "jwk" }))).toBe(LIBTRUST_EC_KID);
  });
});

describe("libtrustKeyId: shape", () => {
  it.each([
    ["EC P-256", () => generateKeyPairSync("ec", { namedCurve: "P-256" })],
    ["EC P-384", () => generateKeyPairSync("ec", { namedCurve: "P-384" })],
    ["EC P-521", () => generateKeyPairSync("ec", { namedCurve: "P-521" })],
    ["RSA 2048", () => generateKeyPairSync("rsa", { modulusLength: 2048 })],
  ])("%s: 59 characters, 12 base32 groups; private and public give the same ID", (_n, gen) => {
    const { privateKey, publicKey } = gen();
    const id = libtrustKeyId(publicKey);
    expect(id).toHaveLength(59);
    expect(id).toMatch(FORMAT);
    expect(libtrustKeyId(privateKey)).toBe(id);
  });

  it("is not the RFC 7638 thumbprint, which v2.8 rejects (distribution registry/auth/token/token.go)", async () => {
    const jwk = createPublicKey(LIBTRUST_EC_PUBLIC).export({ format: "jwk" }) as JWK;
    const thumbprint = await calculateJwkThumbprint(jwk, "sha256");
    expect(thumbprint).not.toBe(LIBTRUST_EC_KID);
    expect(thumbprint).not.toMatch(FORMAT);
  });

  it("distinct P-256 keys get distinct IDs (distribution#4683)", () => {
    const ids = new Set(
      Array.from({ length: 5 }, () =>
        libtrustKeyId(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey),
      ),
    );
    expect(ids.size).toBe(5);
  });
});
