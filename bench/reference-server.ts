/**
 * The minimal reference servers: node:http doing only what an exchange cannot skip (verify the
 * service-account token, sign a registry token), answering `GET /token` with the service's body shape,
 * with no policy, no cache, no logging, no framework. `kind: "bare"` (the issue-16 targets' reference)
 * verifies and signs with node:crypto on the calling thread; `kind: "jose"` with jose (WebCrypto). See
 * `lib/reference.ts`. `GET /healthz` answers the service's constant body (the plumbing row).
 *
 *   node --import tsx bench/reference-server.ts INPUT.json   (started by bench/run.ts)
 */
import { readFileSync } from "node:fs";
import { createServer, type ServerResponse } from "node:http";
import {
  bareVerifyAndSign,
  loadBareKeys,
  loadReferenceKeys,
  type ReferenceInput,
  verifyAndSign,
} from "./lib/reference.js";

const input = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as ReferenceInput;
type Exchange = (token: string, repository: string, actions: string[]) => Promise<Minted> | Minted;
interface Minted {
  token: string;
  iat: number;
  exp: number;
}
let exchange: Exchange;
if (input.kind === "bare") {
  const keys = await loadBareKeys(input);
  exchange = (token, repository, actions) => bareVerifyAndSign(keys, token, repository, actions);
} else {
  const keys = await loadReferenceKeys(input);
  exchange = (token, repository, actions) => verifyAndSign(keys, token, repository, actions);
}
const HEALTHZ = Buffer.from(JSON.stringify({ status: "ok" }));

function answer(res: ServerResponse, minted: Minted): void {
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
}

function credential(header: string | undefined): string | undefined {
  if (!header?.startsWith("Basic ")) return undefined;
  const decoded = Buffer.from(header.slice(6), "base64").toString("utf8");
  return decoded.slice(decoded.indexOf(":") + 1);
}

const server = createServer((req, res) => {
  const url = req.url ?? "";
  if (url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json; charset=utf-8" }).end(HEALTHZ);
    return;
  }
  const q = new URLSearchParams(url.slice(url.indexOf("?") + 1));
  const scope = (q.get("scope") ?? "").split(":");
  const token = credential(req.headers.authorization);
  if (!url.startsWith("/token?") || !token || scope.length !== 3) {
    res.writeHead(400).end();
    return;
  }
  let minted: Promise<Minted> | Minted;
  try {
    minted = exchange(token, scope[1]!, scope[2]!.split(","));
  } catch {
    res.writeHead(401).end();
    return;
  }
  if (!(minted instanceof Promise)) {
    answer(res, minted);
    return;
  }
  minted.then(
    (m) => answer(res, m),
    () => {
      res.writeHead(401).end();
    },
  );
});
server.listen(input.port ?? 0, "127.0.0.1");
process.once("SIGTERM", () => server.close(() => process.exit(0)));
