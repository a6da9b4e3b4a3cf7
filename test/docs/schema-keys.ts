/**
 * Walks the zod config schema and lists every key as a dotted path (`clusters[].jwks.maxStaleSeconds`),
 * so the configuration reference (docs/configuration.md) can be checked against the schema.
 */
import { z } from "zod";

function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema as z.ZodType & { unwrap?: () => z.ZodType; def?: { innerType?: z.ZodType; in?: z.ZodType } };
  for (let i = 0; i < 20; i++) {
    const def = (s as unknown as { def: Record<string, unknown> }).def;
    if (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) {
      s = (def.innerType as typeof s) ?? s;
    } else if (
      (def as { type?: string }).type === "prefault" ||
      (def as { type?: string }).type === "default"
    ) {
      s = def.innerType as typeof s;
    } else if ((def as { type?: string }).type === "pipe") {
      s = def.in as typeof s;
    } else break;
  }
  return s;
}

/** Every dotted key path of `schema`, leaves and objects alike. */
export function schemaKeys(schema: z.ZodType, prefix = ""): string[] {
  const s = unwrap(schema);
  const out: string[] = [];
  if (s instanceof z.ZodObject) {
    for (const [k, v] of Object.entries(s.shape as Record<string, z.ZodType>)) {
      const path = prefix ? `${prefix}.${k}` : k;
      out.push(path, ...schemaKeys(v, path));
    }
  } else if (s instanceof z.ZodArray) {
    out.push(...schemaKeys(s.element as z.ZodType, `${prefix}[]`));
  }
  return out;
}
