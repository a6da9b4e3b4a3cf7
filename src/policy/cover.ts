/**
 * Language inclusion of policy globs: does every string one pattern matches also match another? Used by
 * `validatePolicy` to find allow entries that a deny entry always cancels.
 *
 * Both patterns become small NFAs over a symbolic alphabet (the literal characters of either pattern,
 * `/`, one symbol for "any other character" and one per template variable of the inner pattern) and the
 * pair is explored with the subset construction (Hopcroft & Ullman: L(A) ⊆ L(B) iff no reachable state
 * accepts in A but not in B). A template variable stands for "any one valid path component": only a
 * wildcard of the outer pattern that can consume a whole component, or the same variable, covers it. The
 * answer is therefore sound (true only when inclusion holds for every identity) but not complete when
 * templates are involved: a pattern may be reported as not covered when it is for the values that occur.
 */
import type { PatternPart } from "./glob.js";

/** One pattern token: a literal character, a wildcard (1: not `/`, 2: anything) or a template variable. */
export type GlobToken = { ch: string } | { star: 1 | 2 } | { v: string };

const OTHER = "\u0000other";
const VAR = "\u0000var:";
/** Past this many explored state pairs the answer is "not included" (it only feeds warnings). */
const MAX_STATES = 20_000;

/** Tokens of a name pattern (`*` and `**` match any run, `/` included). */
export function nameTokens(pattern: string): GlobToken[] {
  const out: GlobToken[] = [];
  for (const part of pattern.split(/(\*+)/)) {
    if (part === "") continue;
    if (part.startsWith("*")) out.push({ star: 2 });
    else for (const ch of part) out.push({ ch });
  }
  return out;
}

/** Tokens of a parsed repository pattern. */
export function repositoryTokens(parts: readonly PatternPart[]): GlobToken[] {
  const out: GlobToken[] = [];
  for (const p of parts) {
    if ("lit" in p) for (const ch of p.lit) out.push({ ch });
    else if ("star" in p) out.push({ star: p.star });
    else out.push({ v: p.var === "annotation" ? `annotation:${(p as { key: string }).key}` : p.var });
  }
  return out;
}

function closure(tokens: readonly GlobToken[], states: Iterable<number>): Set<number> {
  const out = new Set(states);
  const stack = [...out];
  while (stack.length > 0) {
    const i = stack.pop() as number;
    const t = tokens[i];
    if (t !== undefined && "star" in t && !out.has(i + 1)) {
      out.add(i + 1);
      stack.push(i + 1);
    }
  }
  return out;
}

function step(tokens: readonly GlobToken[], states: ReadonlySet<number>, symbol: string): Set<number> {
  const next: number[] = [];
  for (const i of states) {
    const t = tokens[i];
    if (t === undefined) continue;
    if ("ch" in t) {
      if (symbol === t.ch) next.push(i + 1);
    } else if ("v" in t) {
      if (symbol === VAR + t.v) next.push(i + 1);
    } else if (t.star === 2 || symbol !== "/") {
      // A template value never holds `/`, so a one-component wildcard consumes it whole.
      next.push(i);
    }
  }
  return closure(tokens, next);
}

const key = (s: ReadonlySet<number>) => [...s].sort((a, b) => a - b).join(",");

/**
 * True when every string `inner` matches is also matched by `outer`, for every value of the template
 * variables (see the module doc for what is assumed of them).
 */
export function globIncludes(outer: readonly GlobToken[], inner: readonly GlobToken[]): boolean {
  const alphabet = new Set<string>(["/", OTHER]);
  for (const t of [...outer, ...inner]) if ("ch" in t) alphabet.add(t.ch);
  for (const t of inner) if ("v" in t) alphabet.add(VAR + t.v);
  const innerEnd = inner.length;
  const outerEnd = outer.length;
  const start: [Set<number>, Set<number>] = [closure(inner, [0]), closure(outer, [0])];
  const seen = new Set<string>();
  const queue = [start];
  while (queue.length > 0) {
    const [a, b] = queue.shift() as [Set<number>, Set<number>];
    const k = `${key(a)}|${key(b)}`;
    if (seen.has(k)) continue;
    if (seen.size >= MAX_STATES) return false;
    seen.add(k);
    if (a.has(innerEnd) && !b.has(outerEnd)) return false;
    for (const symbol of alphabet) {
      const a2 = step(inner, a, symbol);
      if (a2.size === 0) continue;
      queue.push([a2, step(outer, b, symbol)]);
    }
  }
  return true;
}
