/**
 * Config problems as the operator reads them: one line per zod issue with its dotted path (unknown keys
 * with the key probably meant, units of numeric keys), one line per YAML syntax error, and lines of the
 * config shown with secrets masked.
 */
import type { z } from "zod";
import { knownKeysAt, suggestKey, unitOfKey } from "./hints.js";

/** Formats a zod issue path as a dotted path with indices: `registries[0].signingKey.keyFile`. */
export function dottedPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out === "" ? String(seg) : `.${String(seg)}`;
  }
  return out === "" ? "(root)" : out;
}

/** The value at a zod issue path in the raw document, if any. */
function valueAt(raw: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let v = raw;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/** One line per zod issue: `path: message`; a value is echoed only for a numeric key. */
export function issueLines(error: z.ZodError, raw: unknown): string[] {
  return error.issues.flatMap((issue) => {
    const path = [...issue.path];
    let message = issue.message;
    if (issue.code === "unrecognized_keys") {
      // Each unknown key with the key that was probably meant, if one is close.
      const known = knownKeysAt(path);
      const keys = issue.keys.map((k) => {
        const meant = suggestKey(k, known);
        return `"${k}"${meant ? ` (did you mean "${meant}"?)` : ""}`;
      });
      return [`${dottedPath(path)}: unknown key${issue.keys.length > 1 ? "s" : ""} ${keys.join(", ")}`];
    }
    const key = path.at(-1);
    if (issue.code === "invalid_type" && valueAt(raw, path) === undefined) {
      message = "is required";
    } else if (issue.code === "invalid_type" && issue.expected === "number" && typeof key === "string") {
      // A value is echoed only for a numeric key (at most 40 characters): elsewhere it could be a secret.
      const unit = unitOfKey(key);
      const got = valueAt(raw, path);
      const shown = typeof got === "string" ? `"${got.slice(0, 40)}"` : typeof got;
      const duration = typeof got === "string" ? /^(\d+)\s*([smhd])$/.exec(got) : null;
      const factor = { s: 1, m: 60, h: 3600, d: 86_400 } as Record<string, number>;
      const hint =
        unit === "seconds" && duration
          ? ` (durations are plain numbers: ${got as string} is ${Number(duration[1]) * factor[duration[2]!]!})`
          : "";
      message = `must be a number${unit ? ` of ${unit}` : ""}, got ${shown}${hint}`;
    } else if (typeof key === "string" && unitOfKey(key) && /^Too (small|big)/.test(message)) {
      message = `${message} (${unitOfKey(key)})`;
    }
    return [`${dottedPath(path)}: ${message}`];
  });
}

/**
 * A config line as it may be shown in an error: a URL's user information (`redis://:secret@host`), the
 * value of a key naming a secret, and anything shaped like a JWT are masked, so an error never echoes a
 * credential, not even to the terminal of the config's owner.
 */
export function redactLine(line: string): string {
  return line
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s"']*@/gi, "$1***@")
    .replace(/((?:password|passwd|secret|token|credential)[\w-]*["']?\s*:\s*)\S.*$/i, "$1***")
    .replace(/eyJ[\w-]*\.[\w-]*\.[\w-]*/g, "***");
}

/**
 * One line per YAML syntax error: the file, the position, the message, and the offending line itself
 * (`(yaml) config.yaml: Nested mappings are not allowed in compact mappings at line 3, column 13; line 3:
 * "registries: {"`).
 */
export function yamlProblems(
  file: string,
  text: string,
  errors: ReadonlyArray<Error & { linePos?: unknown }>,
): string[] {
  const lines = text.split(/\r?\n/);
  return errors.map((err) => {
    const first = err.message.split("\n")[0]!.replace(/:\s*$/, "");
    const pos = (err.linePos as Array<{ line: number; col: number }> | undefined)?.[0];
    const source = pos ? lines[pos.line - 1] : undefined;
    const shown =
      source === undefined ? "" : `; line ${pos!.line}: ${JSON.stringify(redactLine(source).slice(0, 200))}`;
    return `(yaml) ${file}: ${first}${shown}`;
  });
}
