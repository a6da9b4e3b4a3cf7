/**
 * Authorization header parsing (src/authn/credentials.ts): RFC 7617 Basic (the password is the
 * credential), RFC 6750 Bearer, and every malformed form with its code and exact message.
 */
import { describe, expect, it } from "vitest";
import { MAX_AUTHORIZATION_LENGTH, parseAuthorization } from "../../src/authn/credentials.js";
import { RequestError } from "../../src/errors.js";
import { thrownBy } from "../helpers/errors.js";

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

describe("parseAuthorization: accepted", () => {
  it.each([
    ["absent", undefined, undefined],
    ["empty", "", undefined],
    ["Basic", `Basic ${b64(`x:${JWT}`)}`, { scheme: "basic", username: "x", secret: JWT }],
    [
      "Basic, scheme case-insensitive",
      `basic ${b64(`x:${JWT}`)}`,
      { scheme: "basic", username: "x", secret: JWT },
    ],
    ["Basic, empty username", `Basic ${b64(`:${JWT}`)}`, { scheme: "basic", username: "", secret: JWT }],
    [
      "Basic, password keeps later colons",
      `Basic ${b64("user:pa:ss")}`,
      { scheme: "basic", username: "user", secret: "pa:ss" },
    ],
    [
      "Basic, docker's oauth2accesstoken user",
      `Basic ${b64(`oauth2accesstoken:${JWT}`)}`,
      { scheme: "basic", username: "oauth2accesstoken", secret: JWT },
    ],
    [
      "Basic, unpadded base64",
      `Basic ${b64("ab:cd").replace(/=+$/, "")}`,
      { scheme: "basic", username: "ab", secret: "cd" },
    ],
    ["Basic, extra spaces", `Basic   ${b64("u:p")}  `, { scheme: "basic", username: "u", secret: "p" }],
    ["Bearer", `Bearer ${JWT}`, { scheme: "bearer", secret: JWT }],
    ["Bearer, scheme case-insensitive", `BEARER ${JWT}`, { scheme: "bearer", secret: JWT }],
  ])("%s", (_name, header, want) => {
    expect(parseAuthorization(header)).toEqual(want);
  });
});

describe("parseAuthorization: rejected with malformed_credentials", () => {
  it.each([
    [
      "Basic without a colon",
      `Basic ${b64("nocolon")}`,
      'Basic credential has no ":" between username and password',
    ],
    ["Basic with bad base64", "Basic !!!not-base64!!!", "Basic credential is not valid base64"],
    ["Basic with the base64url alphabet", "Basic dXNlcjpw-_8A", "Basic credential is not valid base64"],
    ["Basic with an impossible length", "Basic abcde", "Basic credential is not valid base64"],
    ["Basic with nothing", "Basic", "Basic credential is not valid base64"],
    ["Basic with only spaces", "Basic    ", "Basic credential is not valid base64"],
    ["Basic with an empty password", `Basic ${b64("user:")}`, "Basic credential has an empty password"],
    ["Bearer with nothing", "Bearer", "Bearer credential is empty"],
    ["Bearer with only spaces", "Bearer   ", "Bearer credential is empty"],
    ["unknown scheme", `Token ${JWT}`, "unsupported Authorization scheme (use Basic or Bearer)"],
    ["bare token without a scheme", JWT, "unsupported Authorization scheme (use Basic or Bearer)"],
    ["too long", `Bearer ${"a".repeat(MAX_AUTHORIZATION_LENGTH)}`, "Authorization header is too long"],
  ])("%s", (_name, header, message) => {
    const caught = thrownBy(() => parseAuthorization(header));
    expect(caught).toBeInstanceOf(RequestError);
    expect((caught as RequestError).code).toBe("malformed_credentials");
    expect((caught as RequestError).statusCode).toBe(401);
    expect((caught as RequestError).message).toBe(message);
  });

  it("never puts the secret in the error message", () => {
    const secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t";
    for (const header of [`Basic ${b64(secret)}`, `Token ${secret}`, `Basic ${secret}!`]) {
      expect(() => parseAuthorization(header)).toThrow(RequestError);
      try {
        parseAuthorization(header);
      } catch (err) {
        expect((err as Error).message).not.toContain(secret);
      }
    }
  });
});
