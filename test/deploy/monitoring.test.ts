/**
 * deploy/kubernetes/monitoring: every metric name in the alert rules and the Grafana dashboard is one the
 * service exports (read from its own registry, process metrics included); the rules pass
 * `promtool check rules` and their unit tests (`promtool test rules`); the kustomization renders, and the
 * ServiceMonitor and the pod annotations scrape the port the service listens on.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments, stringify } from "yaml";
import { exportedMetricsText } from "../helpers/metrics.js";

const root = new URL("../..", import.meta.url).pathname;
const dir = join(root, "deploy/kubernetes/monitoring");
const rule = parse(readFileSync(join(dir, "prometheusrule.yaml"), "utf8"));
const dashboard = JSON.parse(readFileSync(join(dir, "grafana-dashboard.json"), "utf8"));

const has = (bin: string, ...args: string[]) => {
  try {
    execFileSync(bin, args.length > 0 ? args : ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

/** Every series name the service can export: its registry with Redis bound, and the process metrics. */
async function exportedNames(): Promise<Set<string>> {
  const body = await exportedMetricsText();
  const names = new Set<string>();
  for (const m of body.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    names.add(name);
    if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
    if (type === "summary") for (const s of ["_sum", "_count"]) names.add(name + s);
  }
  return names;
}

/** Metric names a PromQL expression uses: identifiers followed by a selector or range, or bare in a call. */
function metricNames(expr: string): string[] {
  const withoutStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const out = new Set<string>();
  for (const m of withoutStrings.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{[]/g)) out.add(m[1]!);
  for (const m of withoutStrings.matchAll(/\b((?:rte|process|nodejs)_[a-zA-Z0-9_:]*)/g)) out.add(m[1]!);
  // Grafana's label_values(metric, label)
  for (const m of withoutStrings.matchAll(/label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/g)) out.add(m[1]!);
  return [...out].filter((n) => !["by", "without", "on", "ignoring", "offset"].includes(n));
}

const ruleExprs: string[] = rule.spec.groups.flatMap((g: { rules: Array<{ expr: string }> }) =>
  g.rules.map((r) => r.expr),
);
// biome-ignore lint/suspicious/noExplicitAny: the dashboard JSON is walked dynamically
const dashboardExprs: string[] = dashboard.panels.flatMap((p: any) => p.targets.map((t: any) => t.expr));
const variableQueries: string[] = dashboard.templating.list
  .filter((v: { type: string }) => v.type === "query")
  .map((v: { query: string }) => v.query);

describe("monitoring: metric names", () => {
  it("every metric in the alert rules and the dashboard is exported by the service", async () => {
    const exported = await exportedNames();
    expect(exported).toContain("rte_build_info");
    const used = new Map<string, string>();
    for (const e of [...ruleExprs, ...dashboardExprs, ...variableQueries])
      for (const n of metricNames(e)) used.set(n, e);
    expect(used.size).toBeGreaterThan(10);
    const unknown = [...used.keys()].filter((n) => !exported.has(n));
    expect(unknown, `not exported: ${unknown.map((n) => `${n} (in ${used.get(n)})`).join("; ")}`).toEqual([]);
  });

  it("the API-server alerts and panels cover rte_kube_api_*: failing, RBAC, rate limited; each alert has a promtool case where it fires and one where it stays quiet", () => {
    const tests = parse(readFileSync(join(dir, "prometheusrule.test.yaml"), "utf8")).tests as Array<{
      alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }>;
    }>;
    const cases = tests.flatMap((t) => t.alert_rule_test);
    const kubeAlerts = rule.spec.groups
      .flatMap((g: { rules: Array<{ alert: string; expr: string }> }) => g.rules)
      .filter((r: { expr: string }) => r.expr.includes("rte_kube_api_calls_total"));
    const outcomes = kubeAlerts.map((r: { alert: string; expr: string }) => [
      r.alert,
      /outcome=~?"([^"]+)"/.exec(r.expr)?.[1],
    ]);
    expect(outcomes).toEqual([
      ["RegistryTokenExchangeKubeApiFailing", "unreachable|timeout|server_error|bad_answer"],
      ["RegistryTokenExchangeKubeApiUnauthorized", "unauthorized|forbidden"],
      ["RegistryTokenExchangeKubeApiRateLimited", "rate_limited"],
    ]);
    for (const [alert] of outcomes) {
      expect(
        cases.some((c) => c.alertname === alert && c.exp_alerts.length > 0),
        `${alert} fires`,
      ).toBe(true);
      expect(
        cases.some((c) => c.alertname === alert && c.exp_alerts.length === 0),
        `${alert} quiet`,
      ).toBe(true);
    }
    for (const metric of ["rte_kube_api_calls_total", "rte_kube_api_cache_total"]) {
      expect(
        dashboardExprs.some((e) => e.includes(metric)),
        metric,
      ).toBe(true);
    }
  });

  it("the name check catches a metric the service does not export", () => {
    expect(metricNames('sum(rate(rte_tokens_minted_total{service="x"}[5m])) / up')).toEqual([
      "rte_tokens_minted_total",
    ]);
  });

  it("the dashboard is one Grafana dashboard: unique panel ids, every target on the datasource variable", () => {
    const ids = dashboard.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels) {
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) expect(t.datasource.uid).toBe("${datasource}");
    }
  });
});

describe.skipIf(!has("promtool") && !process.env.CI)(
  "monitoring: promtool (skipped without promtool outside CI)",
  () => {
    const work = mkdtempSync(join(tmpdir(), "rte-promtool-"));
    afterAll(() => rmSync(work, { recursive: true, force: true }));
    writeFileSync(join(work, "rules.yaml"), stringify(rule.spec));
    copyFileSync(join(dir, "prometheusrule.test.yaml"), join(work, "prometheusrule.test.yaml"));

    it("promtool check rules accepts the PrometheusRule's groups", () => {
      const out = execFileSync("promtool", ["check", "rules", join(work, "rules.yaml")], {
        encoding: "utf8",
      });
      expect(out).toContain(`SUCCESS: ${ruleExprs.length} rules found`);
    });

    it("promtool test rules: the alerts fire (and stay quiet) as their unit tests say", () => {
      const out = execFileSync("promtool", ["test", "rules", "prometheusrule.test.yaml"], {
        cwd: work,
        encoding: "utf8",
      });
      expect(out).toContain("SUCCESS");
    });
  },
);

describe.skipIf(!has("kubectl", "version", "--client") && !process.env.CI)(
  "monitoring: kustomize (skipped without kubectl outside CI)",
  () => {
    it("renders a PrometheusRule, a ServiceMonitor for the Service's port and the dashboard ConfigMap", () => {
      const docs = parseAllDocuments(execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" })).map(
        (d) => d.toJS(),
      );
      expect(docs.map((d) => d.kind).sort()).toEqual(["ConfigMap", "PrometheusRule", "ServiceMonitor"]);
      const cm = docs.find((d) => d.kind === "ConfigMap");
      expect(cm.metadata.labels.grafana_dashboard).toBe("1");
      expect(JSON.parse(cm.data["grafana-dashboard.json"])).toEqual(dashboard);
      const base = parseAllDocuments(
        execFileSync("kubectl", ["kustomize", join(root, "deploy/kubernetes/base")], { encoding: "utf8" }),
      ).map((d) => d.toJS());
      const service = base.find((d) => d.kind === "Service");
      const monitor = docs.find((d) => d.kind === "ServiceMonitor");
      for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels))
        expect(service.metadata.labels[k]).toBe(v);
      expect(service.spec.ports.map((p: { name: string }) => p.name)).toContain(
        monitor.spec.endpoints[0].port,
      );
      const pod = base.find((d) => d.kind === "Deployment").spec.template;
      const port = pod.spec.containers[0].ports.find(
        (p: { name: string }) => p.name === "http",
      ).containerPort;
      expect(pod.metadata.annotations).toEqual({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": String(port),
        "prometheus.io/path": "/metrics",
      });
    });
  },
);
