/**
 * Printing: fixed-width tables for the terminal, and a summary of V8 CPU profiles (`--cpu-prof`) by
 * self time, per function and per package.
 */
import { readFileSync } from "node:fs";

/** Formats a number for a table cell: integers grouped by thousands, small values with decimals. */
function cell(v: string | number | undefined): string {
  if (v === undefined) return "-";
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return "-";
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/**
 * A fixed-width text table; the first `leftColumns` columns (default 1) are left-aligned, the others
 * right-aligned.
 */
export function formatTable(
  headers: string[],
  rows: Array<Array<string | number | undefined>>,
  leftColumns = 1,
): string {
  const text = [headers, ...rows.map((r) => r.map(cell))];
  const widths = headers.map((_, i) => Math.max(...text.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(text[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...text.slice(1).map(line)].join("\n");
}

/** The median of `xs` (the mean of the two middle values for an even count); NaN when empty. */
export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** One line of the targets table. */
export interface TargetLine {
  target: string;
  /** The figure(s) from this run; undefined when this run did not measure it. */
  figure: string | undefined;
  /** Whether the figure meets the target; undefined when not measured. */
  met: boolean | undefined;
  /** What measures it, shown when this run did not. */
  how?: string | undefined;
}

/** The targets table: target, figure (or how to measure it), met / missed / not measured. */
export function targetsTable(lines: TargetLine[]): string {
  return formatTable(
    ["target", "this run", "status"],
    lines.map((l) => [
      l.target,
      l.figure ?? (l.how ? `not measured: ${l.how}` : "not measured in this run"),
      l.met === undefined ? "-" : l.met ? "met" : "MISSED",
    ]),
    3,
  );
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** One entry of a profile summary. */
export interface ProfileEntry {
  name: string;
  /** Share of all samples, percent. */
  selfPct: number;
}

/** Which package (or part of this repository) a script URL belongs to. */
function packageOf(url: string): string {
  if (url === "") return "(native / V8)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith("node:")) return "node core";
  const src = url.indexOf("/src/");
  if (src >= 0) return `src/${url.slice(src + 5).split("/")[0]}`;
  return url;
}

/**
 * Summarises `.cpuprofile` files (taken together) by self time.
 * @returns the top `top` functions and the top packages
 */
export function summariseProfiles(
  files: string[],
  top = 15,
): { functions: ProfileEntry[]; packages: ProfileEntry[]; samples: number } {
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  let total = 0;
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, "utf8")) as { nodes: ProfileNode[] };
    for (const node of profile.nodes) {
      const hits = node.hitCount ?? 0;
      if (hits === 0) continue;
      const { functionName, url, lineNumber } = node.callFrame;
      const short = url.replace(/^.*\/(node_modules|src|bench)\//, "$1/").replace(/^file:\/\//, "");
      const name = `${functionName || "(anonymous)"} ${short ? `${short}:${lineNumber + 1}` : ""}`.trim();
      byFunction.set(name, (byFunction.get(name) ?? 0) + hits);
      const pkg = packageOf(url);
      byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + hits);
      total += hits;
    }
  }
  const rank = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, hits]) => ({ name, selfPct: (100 * hits) / Math.max(1, total) }));
  return { functions: rank(byFunction, top), packages: rank(byPackage, 12), samples: total };
}
