/** The realm's front cache (src/cache/front.ts): bounded in entries and in bytes, entries end at their expiry. */
import { describe, expect, it } from "vitest";
import { FrontCache } from "../../src/cache/front.js";

describe("FrontCache", () => {
  it("drops an entry at its expiry, by the injected clock, and never keeps one already expired", () => {
    let now = 1_000;
    const front = new FrontCache<{ v: number }>({ maxEntries: 10, maxBytes: 1 << 20, now: () => now });
    front.set("a", { v: 1 }, 2_000, 10);
    front.set("late", { v: 2 }, 1_000, 10);
    expect(front.get("a")).toEqual({ v: 1 });
    expect(front.get("late")).toBeUndefined();
    now = 2_000;
    expect(front.get("a")).toBeUndefined();
  });

  it("keeps at most maxEntries, least recently used evicted first", () => {
    const front = new FrontCache<{ v: number }>({ maxEntries: 3, maxBytes: 1 << 20, now: () => 0 });
    for (let i = 0; i < 3; i++) front.set(`k${i}`, { v: i }, 1_000, 10);
    front.get("k0");
    front.set("k3", { v: 3 }, 1_000, 10);
    expect(["k0", "k1", "k2", "k3"].map((k) => front.get(k)?.v)).toEqual([0, undefined, 2, 3]);
  });

  it("keeps at most maxBytes of keys, declared sizes and overhead", () => {
    const front = new FrontCache<{ v: number }>({ maxEntries: 1_000, maxBytes: 10_000, now: () => 0 });
    for (let i = 0; i < 100; i++) front.set(`key-${i}`, { v: i }, 1_000, 1_000);
    const kept = Array.from({ length: 100 }, (_, i) => front.get(`key-${i}`)).filter((v) => v !== undefined);
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThanOrEqual(9);
    expect(front.get("key-99")).toEqual({ v: 99 });
  });
});
