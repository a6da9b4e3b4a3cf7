/**
 * `npm run -s test-image -- DIR [TAG]`: writes a small OCI image layout (one layer, one file) to DIR, for
 * trying a registry without Docker: `skopeo copy oci:DIR:TAG docker://HOST/team-a/app:TAG`. The same
 * builder the e2e suite pushes through skopeo and pulls through containerd (oci.ts).
 */
import { resolve } from "node:path";
import { buildOciLayout } from "./oci.js";

const [dir, tag = "v1"] = process.argv.slice(2);
if (!dir) {
  process.stderr.write("usage: npm run -s test-image -- DIR [TAG]\n");
  process.exit(2);
}
const image = await buildOciLayout(resolve(dir), tag);
process.stdout.write(`oci:${image.dir}:${image.tag}  (manifest ${image.manifest.digest})\n`);
