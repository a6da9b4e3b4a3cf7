/**
 * A tiny OCI image layout built by hand (image-spec v1.0: image-layout.md, manifest.md, config.md), so
 * `skopeo copy oci:<dir>:<tag> docker://...` has something real to push without any network:
 *
 *   <dir>/oci-layout              {"imageLayoutVersion":"1.0.0"}
 *   <dir>/index.json              one manifest descriptor annotated org.opencontainers.image.ref.name=<tag>
 *   <dir>/blobs/sha256/<digest>   the gzip tar layer, the image config, the manifest
 *
 * The layer is a real tar (via tar-stream) holding one small file; the config's `rootfs.diff_ids` is the
 * digest of the uncompressed tar, as containerd checks when it unpacks.
 */
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { pack } from "tar-stream";

/** An OCI content descriptor. */
interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** What {@link buildOciLayout} wrote. */
export interface OciImage {
  /** The layout directory. */
  dir: string;
  /** The ref name in index.json (`oci:<dir>:<tag>`). */
  tag: string;
  /** The manifest descriptor (its digest is what a registry must serve back). */
  manifest: Descriptor;
  config: Descriptor;
  layer: Descriptor;
  /** sha256 of the uncompressed layer tar. */
  diffId: string;
}

/** A file to put in the layer. */
export interface LayerFile {
  name: string;
  content: string;
}

const sha256 = (data: Uint8Array): string => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** Builds an uncompressed tar of `files` (ustar, mode 0644, fixed mtime so the bytes are reproducible). */
async function tarOf(files: readonly LayerFile[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    tar.on("data", (c: unknown) => chunks.push(Buffer.from(c as Uint8Array)));
    tar.on("end", () => resolve(Buffer.concat(chunks)));
    tar.on("error", reject);
  });
  const mtime = new Date("2024-01-01T00:00:00Z");
  for (const f of files) {
    await new Promise<void>((resolve, reject) =>
      tar.entry({ name: f.name, mode: 0o644, mtime, uid: 0, gid: 0 }, f.content, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  tar.finalize();
  return done;
}

/** The image-spec platform names for this machine (what containerd matches a plain manifest against). */
function hostPlatform(): { os: string; architecture: string } {
  const arch: Record<string, string> = {
    x64: "amd64",
    arm64: "arm64",
    arm: "arm",
    ppc64: "ppc64le",
    s390x: "s390x",
  };
  return { os: "linux", architecture: arch[process.arch] ?? process.arch };
}

/**
 * Writes an OCI image layout with one layer into `dir`.
 * @param tag the ref name (`oci:<dir>:<tag>`)
 * @param files the layer's files (default: one `hello.txt`)
 */
export async function buildOciLayout(
  dir: string,
  tag = "v1",
  files: readonly LayerFile[] = [{ name: "hello.txt", content: "hello from registry-token-exchange e2e\n" }],
): Promise<OciImage> {
  const blobs = join(dir, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const putBlob = (mediaType: string, data: Uint8Array): Descriptor => {
    const digest = sha256(data);
    writeFileSync(join(blobs, digest.slice("sha256:".length)), data);
    return { mediaType, digest, size: data.byteLength };
  };

  const tar = await tarOf(files);
  const diffId = sha256(tar);
  const layer = putBlob("application/vnd.oci.image.layer.v1.tar+gzip", gzipSync(tar));
  const created = "2024-01-01T00:00:00Z";
  const config = putBlob(
    "application/vnd.oci.image.config.v1+json",
    Buffer.from(
      JSON.stringify({
        created,
        ...hostPlatform(),
        config: { Cmd: ["/hello.txt"] },
        rootfs: { type: "layers", diff_ids: [diffId] },
        history: [{ created, created_by: "registry-token-exchange e2e helper" }],
      }),
    ),
  );
  const manifest = putBlob(
    "application/vnd.oci.image.manifest.v1+json",
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config,
        layers: [layer],
      }),
    ),
  );
  const index = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{ ...manifest, annotations: { "org.opencontainers.image.ref.name": tag } }],
  };
  writeFileSync(join(dir, "index.json"), JSON.stringify(index));
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  return { dir, tag, manifest, config, layer, diffId };
}
