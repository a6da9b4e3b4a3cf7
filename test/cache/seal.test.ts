import { describe, expect, it } from "vitest";
import { CacheSealer } from "../../src/cache/seal.js";

const secret = Buffer.alloc(32, 7);

describe("CacheSealer", () => {
  it("opens what it sealed under the same name", () => {
    const s = new CacheSealer(secret);
    const value = '{"serviceAccount":"builder"}';
    const sealed = s.seal("id:abc", value);
    expect(sealed.startsWith("s1.")).toBe(true);
    expect(sealed).not.toContain("builder");
    expect(Buffer.from(sealed.slice(3), "base64url").toString("latin1")).not.toContain("builder");
    expect(s.open("id:abc", sealed)).toBe(value);
  });

  it("refuses an entry moved to another name, altered, or sealed with another secret", () => {
    const s = new CacheSealer(secret);
    const sealed = s.seal("id:abc", "value");
    expect(s.open("id:abd", sealed)).toBeUndefined();
    // The second-to-last base64url character carries only tag bits: any other character alters the tag.
    const at = sealed.length - 2;
    const flipped = `${sealed.slice(0, at)}${sealed[at] === "A" ? "B" : "A"}${sealed.slice(at + 1)}`;
    expect(flipped).not.toBe(sealed);
    expect(s.open("id:abc", flipped)).toBeUndefined();
    expect(new CacheSealer(Buffer.alloc(32, 8)).open("id:abc", sealed)).toBeUndefined();
    expect(s.open("id:abc", '{"plain":"json"}')).toBeUndefined();
    expect(s.open("id:abc", "s1.")).toBeUndefined();
    expect(s.open("id:abc", undefined)).toBeUndefined();
  });

  it("binds an entry to a credential when given one", () => {
    const s = new CacheSealer(secret);
    const sealed = s.seal("tok:1", "registry-token", "credential-a");
    expect(s.open("tok:1", sealed, "credential-a")).toBe("registry-token");
    expect(s.open("tok:1", sealed, "credential-b")).toBeUndefined();
    expect(s.open("tok:1", sealed)).toBeUndefined();
  });

  it("derives keyed names that differ by secret and by purpose", () => {
    const a = new CacheSealer(secret);
    const b = new CacheSealer(Buffer.alloc(32, 9));
    expect(a.key("id", "tok")).toMatch(/^[0-9a-f]{64}$/);
    expect(a.key("id", "tok")).toBe(a.key("id", "tok"));
    expect(a.key("id", "tok")).not.toBe(b.key("id", "tok"));
    expect(a.key("id", "tok")).not.toBe(a.key("review", "tok"));
  });

  it("derives the same secret from the same key material on every replica", () => {
    const parts = [Buffer.from("key-1"), Buffer.from("key-2")];
    const x = CacheSealer.fromKeyMaterial(parts);
    const y = CacheSealer.fromKeyMaterial(parts);
    expect(y.open("n", x.seal("n", "v"))).toBe("v");
    const z = CacheSealer.fromKeyMaterial([Buffer.from("key-1")]);
    expect(z.open("n", x.seal("n", "v"))).toBeUndefined();
  });

  it("refuses a short secret", () => {
    expect(() => new CacheSealer(Buffer.alloc(16))).toThrow(TypeError);
  });
});
