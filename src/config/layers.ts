/**
 * Config layering: `serve --config base.yaml --config overlay.yaml` reads every file and deep-merges each
 * into the ones before it, then validates the merged document as one (src/config/load.ts). A kustomize
 * overlay ships a small fragment this way and never copies the base config (docs/operations.md).
 *
 * Merge rules (RFC 7386 JSON Merge Patch, plus Kubernetes strategic merge patch's merge key for lists of
 * named entries):
 * - a mapping merges into a mapping key by key; `key: null` removes the key (RFC 7386 §2);
 * - a list of mappings that all have a string `name` merges into such a list entry by entry, matched by
 *   `name` (like `patchMergeKey: name`): a known name merges into its entry, a new name is appended; this
 *   covers `clusters` and `policy.rules` (an entry cannot be removed by a later file);
 * - any other value (scalars, lists of strings, lists of unnamed mappings) replaces the earlier one;
 * - a later file may change a value, never its kind: a mapping, a list and a scalar do not replace each
 *   other (almost always an indentation or a key mistake).
 * A key ending in `File` names a file: a relative path is resolved against the folder of the file that
 * sets it (as kubectl does for the files of a merged KUBECONFIG).
 */
import { dirname, isAbsolute, resolve } from "node:path";
import { ConfigError } from "../errors.js";

/** One parsed config file, in command-line order. */
export interface ConfigLayer {
  /** The file as given on the command line (named in error messages). */
  file: string;
  /** Its parsed YAML document (`null` for an empty file). */
  doc: unknown;
}

/** The merged document and, for every dotted path in it, the files that set a value at or under it. */
export interface MergedLayers {
  /** The merged document, not yet validated. */
  doc: unknown;
  /** Dotted path (`clusters[0].review`) -> the files that contributed to it, in order. */
  sources: ReadonlyMap<string, readonly string[]>;
}

type Mapping = Record<string, unknown>;

const isMapping = (v: unknown): v is Mapping => v !== null && typeof v === "object" && !Array.isArray(v);

const kindOf = (v: unknown): "mapping" | "list" | "scalar" =>
  Array.isArray(v) ? "list" : isMapping(v) ? "mapping" : "scalar";

const isNamedList = (v: unknown): v is Mapping[] =>
  Array.isArray(v) && v.every((e) => isMapping(e) && typeof e.name === "string");

/** Sets an own property, whatever its name: `__proto__` stays a key (and the schema refuses it). */
function setOwn(target: Mapping, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

const child = (path: string, key: string) => (path === "" ? key : `${path}.${key}`);

/**
 * Copies `doc` with every relative string value of a key ending in `File` resolved against `dir`.
 * @param doc a parsed config document (any shape)
 * @param dir an absolute folder
 */
function resolveLayerFiles(doc: unknown, dir: string): unknown {
  if (Array.isArray(doc)) return doc.map((e) => resolveLayerFiles(e, dir));
  if (!isMapping(doc)) return doc;
  const out: Mapping = {};
  for (const [key, value] of Object.entries(doc)) {
    const isPath = key.endsWith("File") && typeof value === "string" && value !== "" && !isAbsolute(value);
    setOwn(out, key, isPath ? resolve(dir, value as string) : resolveLayerFiles(value, dir));
  }
  return out;
}

/**
 * Deep-merges config layers by the rules in this module's comment. Relative `*File` paths of each layer
 * are resolved against that layer's folder.
 * @param layers the parsed files, in command-line order (at least one)
 * @returns the merged document and where each of its values came from
 * @throws {ConfigError} every problem of every layer, one line each, naming the file and its own dotted
 *   path: `overlay.yaml: (root): must be a mapping of config keys, got a list`, `overlay.yaml:
 *   clusters[0].review: is a number here but a mapping in base.yaml; a later file may change a value, not
 *   its kind`, `overlay.yaml: clusters[1]: has no name; the entries of clusters merge by name`,
 *   `overlay.yaml: clusters: the name "local" appears twice`
 */
export function mergeConfigLayers(layers: readonly ConfigLayer[]): MergedLayers {
  const sources = new Map<string, string[]>();
  const problems: string[] = [];
  const record = (path: string, file: string) => {
    const list = sources.get(path) ?? [];
    if (!list.includes(file)) list.push(file);
    sources.set(path, list);
  };
  /** Records `file` for `path` and every path under it (the value was taken whole from `file`). */
  const recordAll = (path: string, value: unknown, file: string) => {
    record(path === "" ? "(root)" : path, file);
    if (Array.isArray(value)) {
      for (const [i, e] of value.entries()) recordAll(`${path}[${i}]`, e, file);
    } else if (isMapping(value)) {
      for (const [k, v] of Object.entries(value)) recordAll(child(path, k), v, file);
    }
  };
  /** Forgets where the value at `path` and under it came from (it is being replaced). */
  const forget = (path: string) => {
    for (const p of [...sources.keys()]) {
      if (p === path || p.startsWith(`${path}.`) || p.startsWith(`${path}[`)) sources.delete(p);
    }
  };
  const earlierFile = (path: string) => (sources.get(path) ?? []).at(-1) ?? "an earlier file";

  /**
   * Merges `next` (from `file`, at `ownPath` in that file) into `prev` (at `path` in the merged document).
   */
  const merge = (prev: unknown, next: unknown, path: string, ownPath: string, file: string): unknown => {
    if (prev === undefined) {
      recordAll(path, next, file);
      return next;
    }
    if (kindOf(prev) !== kindOf(next)) {
      problems.push(
        `${file}: ${ownPath || "(root)"}: is a ${kindOf(next)} here but a ${kindOf(prev)} in ${earlierFile(path || "(root)")}; a later file may change a value, not its kind`,
      );
      return prev;
    }
    if (isMapping(prev) && isMapping(next)) {
      record(path || "(root)", file);
      const out: Mapping = {};
      for (const [k, v] of Object.entries(prev)) setOwn(out, k, v);
      for (const [k, v] of Object.entries(next)) {
        if (v === null) {
          // RFC 7386 §2: null removes the member.
          delete out[k];
          forget(child(path, k));
          recordAll(child(path, k), v, file);
          continue;
        }
        const existing = Object.hasOwn(out, k) ? out[k] : undefined;
        setOwn(out, k, merge(existing, v, child(path, k), child(ownPath, k), file));
      }
      return out;
    }
    if (Array.isArray(prev) && Array.isArray(next) && prev.length > 0 && isNamedList(prev)) {
      return mergeNamed(prev, next, path, ownPath, file);
    }
    forget(path);
    recordAll(path, next, file);
    return next;
  };

  const mergeNamed = (prev: Mapping[], next: unknown[], path: string, ownPath: string, file: string) => {
    const out = [...prev];
    const seen = new Set<string>();
    next.forEach((entry, i) => {
      const at = `${ownPath}[${i}]`;
      if (!isMapping(entry) || typeof entry.name !== "string") {
        problems.push(`${file}: ${at}: has no name; the entries of ${ownPath} merge by name`);
        return;
      }
      if (seen.has(entry.name)) {
        problems.push(`${file}: ${ownPath}: the name ${JSON.stringify(entry.name)} appears twice`);
        return;
      }
      seen.add(entry.name);
      const j = out.findIndex((e) => e.name === entry.name);
      const index = j < 0 ? out.length : j;
      out[index] = merge(j < 0 ? undefined : out[j], entry, `${path}[${index}]`, at, file) as Mapping;
    });
    record(path, file);
    return out;
  };

  let doc: unknown;
  layers.forEach((layer, n) => {
    const own = layers.length > 1 ? resolveLayerFiles(layer.doc, dirname(resolve(layer.file))) : layer.doc;
    if (n === 0) {
      doc = own;
      recordAll("", own, layer.file);
      return;
    }
    // An empty file adds nothing.
    if (own === null || own === undefined) return;
    if (!isMapping(own)) {
      problems.push(`${layer.file}: (root): must be a mapping of config keys, got a ${kindOf(own)}`);
      return;
    }
    doc = merge(doc ?? {}, own, "", "", layer.file);
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return { doc, sources };
}

/**
 * Names the file(s) behind each problem of a merged document: a line `path: message` whose path (or its
 * closest parent) came from files F1, F2 becomes `F1, F2: path: message`; other lines are kept as they are.
 * For an unknown key the key itself is looked up first (it came from one file).
 * @param problems one `dotted.path: message` line each (schema, in-cluster defaults, file checks)
 * @param sources as returned by {@link mergeConfigLayers}
 */
export function attributeProblems(
  problems: readonly string[],
  sources: ReadonlyMap<string, readonly string[]>,
): string[] {
  return problems.map((line) => {
    const m = /^([^\s:]+): (.*)$/.exec(line);
    if (!m) return line;
    const path = m[1]!;
    const unknownKey = /^unknown keys? "([^"]+)"/.exec(m[2]!)?.[1];
    const candidates = unknownKey ? [child(path === "(root)" ? "" : path, unknownKey)] : [];
    for (let p = path; p !== ""; p = p.replace(/(\[\d+\]|\.?[^.[\]]+)$/, "")) candidates.push(p);
    candidates.push("(root)");
    for (const p of candidates) {
      const files = sources.get(p);
      if (files && files.length > 0) return `${files.join(", ")}: ${line}`;
    }
    return line;
  });
}
