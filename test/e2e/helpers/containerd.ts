/**
 * A private containerd (the runtime behind most kubelets) for the e2e suite: its own root, state, socket
 * and config under a temp dir, never touching /var/lib/containerd or /run/containerd. Needs root.
 *
 * Only what an image pull needs is loaded: the CRI plugin (which wants CNI, cgroups and a sandbox image)
 * and the snapshotters that probe block devices or kernel modules are disabled, so start-up works in a
 * container sandbox. Unpacking uses the `native` snapshotter (plain copies; overlayfs mounts are often not
 * permitted in a sandbox) — see {@link ctr}.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { canConnect, childEnv, ManagedProcess, type RunResult, run, waitUntil } from "./process.js";

/** The namespace the suite's images live in. */
const CTR_NAMESPACE = "e2e";
/** The snapshotter used for unpacking (no mounts needed). */
const SNAPSHOTTER = "native";

/** Plugins that are not needed for pulls and can fail to start in a sandbox. */
const DISABLED_PLUGINS = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
];

/** A running containerd. */
export interface Containerd {
  /** The gRPC socket (`ctr --address`). */
  socket: string;
  process: ManagedProcess;
  stop: () => Promise<void>;
}

/**
 * Writes a minimal containerd config (v2) into `dir`.
 * @returns the config file path
 */
function writeContainerdConfig(dir: string): string {
  const file = join(dir, "config.toml");
  writeFileSync(
    file,
    [
      "version = 2",
      `disabled_plugins = [${DISABLED_PLUGINS.map((p) => JSON.stringify(p)).join(", ")}]`,
      "",
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${JSON.stringify(join(dir, "opt"))}`,
      "",
      "[debug]",
      '  level = "info"',
      "",
    ].join("\n"),
  );
  return file;
}

/** Starts `containerd` with root, state, socket and config under `dir`, and waits for its socket. */
export async function startContainerd(dir: string): Promise<Containerd> {
  const socket = join(dir, "containerd.sock");
  const config = writeContainerdConfig(dir);
  const proc = new ManagedProcess(
    "containerd",
    "containerd",
    ["--root", join(dir, "root"), "--state", join(dir, "state"), "--address", socket, "--config", config],
    join(dir, "containerd.log"),
  );
  try {
    await waitUntil(`containerd on ${socket}`, () => canConnect(socket), { proc, timeoutMs: 20_000 });
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return { socket, process: proc, stop: () => proc.stop() };
}

/**
 * Runs `ctr --address <socket> -n e2e <args>` with the native snapshotter.
 * @param timeoutMs kill the command after this long
 */
export function ctr(containerd: Containerd, args: readonly string[], timeoutMs = 30_000): Promise<RunResult> {
  return run("ctr", ["--address", containerd.socket, "--namespace", CTR_NAMESPACE, ...args], {
    timeoutMs,
    env: childEnv({ CONTAINERD_SNAPSHOTTER: SNAPSHOTTER }),
  });
}
