/**
 * Hints that turn a schema problem into advice: the key that was probably meant for an unknown key
 * (`registrys` -> `registries`, `tokenTTLSeconds` -> `tokenTtlSeconds`), and the unit a number is in,
 * named after the key's suffix (`...Seconds`, `...Ms`, `...Bytes`).
 */
import { z } from "zod";
import { configSchema } from "./schema.js";

type Def = { type?: string; innerType?: z.ZodType; in?: z.ZodType; element?: z.ZodType };

/** Strips optional/default/prefault/nullable/pipe wrappers down to the schema that holds the shape. */
function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  for (let i = 0; i < 20; i++) {
    const def = (s as unknown as { def: Def }).def;
    if (
      def.innerType &&
      ["optional", "default", "prefault", "nullable", "readonly"].includes(def.type ?? "")
    ) {
      s = def.innerType;
    } else if (def.type === "pipe" && def.in) {
      s = def.in;
    } else break;
  }
  return s;
}

/**
 * The keys the schema allows in the object at `path` (a zod issue path: keys and array indices).
 * @returns the allowed keys, or an empty list when `path` does not lead to an object of the schema
 */
export function knownKeysAt(path: ReadonlyArray<PropertyKey>): string[] {
  let s: z.ZodType = configSchema;
  for (const seg of path) {
    s = unwrap(s);
    if (typeof seg === "number") {
      if (!(s instanceof z.ZodArray)) return [];
      s = s.element as z.ZodType;
    } else if (s instanceof z.ZodObject) {
      const next = (s.shape as Record<string, z.ZodType>)[String(seg)];
      if (!next) return [];
      s = next;
    } else return [];
  }
  s = unwrap(s);
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

/** Levenshtein distance between `a` and `b` (insertions, deletions, substitutions each cost 1). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * The known key `unknown` was most probably meant to be: equal ignoring case, or within an edit distance
 * of a third of its length (at least 1 for keys of 3 characters or more, at most 3).
 * @returns the suggestion, or `undefined` when no key is close enough
 */
export function suggestKey(unknown: string, known: readonly string[]): string | undefined {
  const lower = unknown.toLowerCase();
  const sameCase = known.find((k) => k.toLowerCase() === lower);
  if (sameCase) return sameCase;
  const limit = Math.min(3, Math.max(unknown.length >= 3 ? 1 : 0, Math.floor(unknown.length / 3)));
  let best: { key: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(lower, k.toLowerCase());
    if (d <= limit && (best === undefined || d < best.d)) best = { key: k, d };
  }
  return best?.key;
}

/**
 * The unit of a numeric key, named by its suffix: `tokenTtlSeconds` -> "seconds", `timeoutMs` ->
 * "milliseconds", `maxBytes` -> "bytes".
 * @returns the unit, or `undefined` for a key without one
 */
export function unitOfKey(key: string): string | undefined {
  if (/Seconds$/.test(key)) return "seconds";
  if (/Ms$/.test(key)) return "milliseconds";
  if (/Bytes$/.test(key)) return "bytes";
  return undefined;
}
