/**
 * CPU profiles of exactly the measured phase: the service runs with `--inspect=127.0.0.1:0`, and the
 * benchmark starts and stops V8's sampling profiler over the DevTools protocol around the load (warm-up
 * and start-up stay out of it). One process only: cluster workers are not profiled this way.
 */
import { writeFileSync } from "node:fs";
import { WebSocket } from "undici";

/** A connected profiler session. */
export interface ProfilerSession {
  start: () => Promise<void>;
  /** Stops, writes the `.cpuprofile` to `file` (opens in Chrome DevTools) and disconnects. */
  stopTo: (file: string) => Promise<void>;
}

/** Finds the inspector URL a child printed on stderr (`Debugger listening on ws://...`). */
export function inspectorUrl(stderr: string): string | undefined {
  return /Debugger listening on (ws:\/\/\S+)/.exec(stderr)?.[1];
}

/** Connects to an inspector WebSocket URL. */
export async function connectProfiler(url: string): Promise<ProfilerSession> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)), { once: true });
  });
  let id = 0;
  const pending = new Map<number, (result: unknown) => void>();
  ws.addEventListener("message", (event) => {
    const msg = JSON.parse(String(event.data)) as { id?: number; result?: unknown };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg.result);
  });
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve) => {
      pending.set(++id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  return {
    start: async () => {
      await call("Profiler.start");
    },
    stopTo: async (file) => {
      const result = (await call("Profiler.stop")) as { profile: unknown };
      writeFileSync(file, JSON.stringify(result.profile));
      ws.close();
    },
  };
}
