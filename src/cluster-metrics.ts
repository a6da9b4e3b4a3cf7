/**
 * `/metrics` across `serve --workers N` (node:cluster): one scrape answers the sum over every worker.
 *
 * The primary accepts connections and hands each to one worker, so a scrape reaches one worker only; if
 * that worker answered with its own counters, Prometheus would see them jump between the workers' values
 * (and count resets). Instead the worker that receives the scrape asks the primary, which collects every
 * worker's registries with prom-client's {@link AggregatorRegistry} (counters and histograms summed,
 * gauges as each declares: `aggregator` in `plugins/metrics.ts`) and answers with the aggregated exposition text.
 *
 * Messages (over the cluster IPC channel, never the network): a worker sends
 * `{ type: "rte:metrics-request", id }`; the primary answers `{ type: "rte:metrics-response", id, body }`
 * or `{ ..., error }`.
 */
import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, type Registry } from "prom-client";

const REQUEST = "rte:metrics-request";
const RESPONSE = "rte:metrics-response";

/** How long a worker waits for the primary's aggregated answer, ms (prom-client's own limit is 5 s). */
const AGGREGATE_TIMEOUT_MS = 6_000;

interface MetricsRequest {
  type: typeof REQUEST;
  id: number;
}

interface MetricsResponse {
  type: typeof RESPONSE;
  id: number;
  body?: string;
  error?: string;
}

/**
 * Primary side: answers the workers' requests for aggregated metrics. Call once in the primary, before
 * forking. Idempotent.
 */
export function serveClusterMetrics(): void {
  if (servingPrimary) return;
  servingPrimary = true;
  const aggregator = new AggregatorRegistry();
  cluster.on("message", (worker: Worker, message: unknown) => {
    const m = message as Partial<MetricsRequest> | null;
    if (m?.type !== REQUEST || typeof m.id !== "number") return;
    const id = m.id;
    aggregator.clusterMetrics().then(
      (body) => send(worker, { type: RESPONSE, id, body }),
      (err: unknown) => send(worker, { type: RESPONSE, id, error: (err as Error).message }),
    );
  });
}

let servingPrimary = false;

function send(worker: Worker, message: MetricsResponse): void {
  if (worker.isConnected()) worker.send(message);
}

let nextId = 0;
const pending = new Map<number, (response: MetricsResponse) => void>();
let listening = false;

/**
 * Environment the primary of `serve --workers N` forks its workers with: it marks a worker whose primary
 * answers metrics requests (another cluster primary, such as a process manager's, would not).
 */
export const WORKER_ENV: Readonly<Record<string, string>> = Object.freeze({ RTE_CLUSTER_METRICS: "1" });

/**
 * Worker side: true when this process is a worker forked by `serve --workers N` (a node:cluster worker
 * with an IPC channel to a primary that answers metrics requests).
 */
export function inClusterWorker(): boolean {
  return (
    cluster.isWorker &&
    typeof process.send === "function" &&
    process.env.RTE_CLUSTER_METRICS === WORKER_ENV.RTE_CLUSTER_METRICS
  );
}

/**
 * Worker side: the registries this worker contributes to the primary's aggregation (prom-client answers
 * the primary's collection requests from them). Call once per worker process.
 */
export function contributeRegistries(registries: Registry[]): void {
  if (!inClusterWorker()) return;
  AggregatorRegistry.setRegistries(registries);
  // Constructing an AggregatorRegistry in a worker installs prom-client's answer to the primary.
  new AggregatorRegistry();
}

/**
 * Worker side: asks the primary for the exposition text aggregated over every worker.
 * @returns the aggregated text (Prometheus text format 0.0.4)
 * @throws {Error} when the primary does not answer within 6 s or a worker's collection failed
 */
export function aggregatedMetrics(): Promise<string> {
  if (!listening) {
    listening = true;
    process.on("message", (message: unknown) => {
      const m = message as Partial<MetricsResponse> | null;
      if (m?.type !== RESPONSE || typeof m.id !== "number") return;
      pending.get(m.id)?.(m as MetricsResponse);
    });
  }
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error("the primary did not answer with aggregated metrics in time"));
    }, AGGREGATE_TIMEOUT_MS);
    pending.set(id, (response) => {
      clearTimeout(timer);
      pending.delete(id);
      if (response.body !== undefined) resolve(response.body);
      else reject(new Error(`aggregating the workers' metrics failed: ${response.error ?? "no answer"}`));
    });
    process.send!({ type: REQUEST, id } satisfies MetricsRequest);
  });
}
