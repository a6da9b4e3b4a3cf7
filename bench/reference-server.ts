/**
 * The minimal reference server: node:http + jose doing only what an exchange cannot skip (verify the
 * service-account token, sign a registry token), answering `GET /token` like the service does, with no
 * policy, no cache, no logging, no framework. The service is measured against it.
 *
 *   node --import tsx bench/reference-server.ts INPUT.json   (started by bench/run.ts)
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { loadReferenceKeys, type ReferenceInput, verifyAndSign } from "./lib/reference.js";

const input = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as ReferenceInput;
const keys = await loadReferenceKeys(input);

function credential(header: string | undefined): string | undefined {
  if (!header?.startsWith("Basic ")) return undefined;
  const decoded = Buffer.from(header.slice(6), "base64").toString("utf8");
  return decoded.slice(decoded.indexOf(":") + 1);
}

const server = createServer((req, res) => {
  const url = req.url ?? "";
  if (url === "/healthz") {
    res.end("ok");
    return;
  }
  const q = new URLSearchParams(url.slice(url.indexOf("?") + 1));
  const scope = (q.get("scope") ?? "").split(":");
  const token = credential(req.headers.authorization);
  if (!url.startsWith("/token?") || !token || scope.length !== 3) {
    res.writeHead(400).end();
    return;
  }
  verifyAndSign(keys, token, scope[1]!, scope[2]!.split(",")).then(
    (minted) => {
      const issuedAt = new Date(minted.iat * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
      res.writeHead(200, {
        "content-type": "application/json; charset=utf-8",
        "cache-control": "no-store",
        pragma: "no-cache",
      });
      res.end(
        JSON.stringify({
          token: minted.token,
          access_token: minted.token,
          expires_in: minted.exp - minted.iat,
          issued_at: issuedAt,
        }),
      );
    },
    () => {
      res.writeHead(401).end();
    },
  );
});
server.listen(input.port ?? 0, "127.0.0.1");
process.once("SIGTERM", () => server.close(() => process.exit(0)));
