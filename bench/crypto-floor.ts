/**
 * The crypto floor: `amount` exchanges reduced to one jose verify of a service-account token plus one jose
 * sign of a registry token, `concurrency` at a time, in one process, no HTTP. Prints one JSON line:
 * `{ops, seconds, rps, p50, p99, cpuSeconds}` (latencies in ms; CPU of all threads, the crypto pool too).
 *
 *   node --import tsx bench/crypto-floor.ts INPUT.json   (started by bench/run.ts)
 */
import { readFileSync } from "node:fs";
import { createHistogram } from "node:perf_hooks";
import { loadReferenceKeys, type ReferenceInput, verifyAndSign } from "./lib/reference.js";

const input = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as ReferenceInput;
const keys = await loadReferenceKeys(input);
const tokens = readFileSync(input.tokensFile!, "utf8").trim().split("\n");
const amount = input.amount ?? 10_000;
const hist = createHistogram({ lowest: 1, highest: 60_000_000, figures: 3 });

/** Runs `count` exchanges, `concurrency` at a time, recording each one's latency. */
async function run(count: number, offset: number): Promise<void> {
  let next = 0;
  const loop = async () => {
    for (let n = next++; n < count; n = next++) {
      const t0 = process.hrtime.bigint();
      await verifyAndSign(keys, tokens[(offset + n) % tokens.length]!, `team-0/app-${n}`, ["pull", "push"]);
      hist.record(Math.max(1, Number((process.hrtime.bigint() - t0) / 1000n)));
    }
  };
  await Promise.all(Array.from({ length: input.concurrency ?? 32 }, loop));
}

// Warm-up (JIT, key conversion), not measured: as much again as the measured run, at most 10,000.
await run(Math.min(amount, 10_000), 0);
hist.reset();
const started = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
await run(amount, 0);
const cpu = process.cpuUsage(cpu0);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const ms = (p: number) => Math.round(hist.percentile(p)) / 1000;
process.stdout.write(
  `${JSON.stringify({ ops: hist.count, seconds, rps: hist.count / seconds, p50: ms(50), p99: ms(99), cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`,
);
