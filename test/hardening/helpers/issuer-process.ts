/**
 * A Kubernetes-faithful issuer (discovery + JWKS, `src/local/issuer.ts`) as its own process, so tests can
 * start it, kill it, freeze it (SIGSTOP: the kernel still accepts connections, nothing answers) and thaw
 * it, like a real apiserver going down or hanging.
 *
 *   node --import tsx test/hardening/helpers/issuer-process.ts <issuer.json> <port> <mode-file>
 *
 * `issuer.json` is what `LocalIssuer.save` writes (its URL must be `http://127.0.0.1:<port>`). The mode
 * file is read on every request: `ok` serves the real documents, `garbage` answers the JWKS with a body
 * that is JSON but no key set, `html` answers it with an HTML error page. Every request is announced on
 * stdout as `served <path> <mode>`; `listening` once ready.
 */
import { readFileSync } from "node:fs";
import Fastify from "fastify";
import { LocalIssuer } from "../../../src/local/issuer.js";

const [file, port, modeFile] = process.argv.slice(2);
if (!file || !port || !modeFile) {
  console.error("usage: issuer-process.ts <issuer.json> <port> <mode-file>");
  process.exit(2);
}
const issuer = LocalIssuer.load(file);
const app = Fastify({ logger: false });
app.addHook("onRequest", async (request, reply) => {
  let mode = "ok";
  try {
    mode = readFileSync(modeFile, "utf8").trim();
  } catch {
    // no file: ok
  }
  process.stdout.write(`served ${request.url} ${mode}\n`);
  if (!request.url.endsWith("/jwks")) return;
  if (mode === "garbage") return reply.type("application/json").send({ keys: "not a key set" });
  if (mode === "html") return reply.code(502).type("text/html").send("<html><body>Bad Gateway</body></html>");
});
issuer.register(app);
await app.listen({ host: "127.0.0.1", port: Number(port) });
process.stdout.write("listening\n");
