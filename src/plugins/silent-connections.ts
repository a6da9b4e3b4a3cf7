/**
 * Closes connections that send nothing. Node's `headersTimeout` is counted from a request's first byte
 * and Node sets no socket idle timeout, so without this a connection that stays silent is held for ever:
 * a peer could open such connections until the process runs out of file descriptors.
 *
 * Rule: a plain-HTTP connection that has not sent a single byte `ms` after it was accepted is destroyed
 * (from its first byte on, `headersTimeout`, `requestTimeout` and `keepAliveTimeout` apply as usual, so a
 * used keep-alive connection, such as a load balancer's pooled one, is unaffected). For HTTPS the same
 * bound is Node's TLS `handshakeTimeout` (set by the app from the same setting).
 */
import type { Server } from "node:net";

/**
 * Destroys each connection of `server` that has read no byte `ms` milliseconds after it was accepted.
 * @param server the plain-HTTP server (not an HTTPS one: its bound is `handshakeTimeout`)
 * @param ms the bound, milliseconds (the app passes `server.headersTimeoutMs`)
 */
export function closeSilentConnections(server: Server, ms: number): void {
  server.on("connection", (socket) => {
    // bytesRead counts what the HTTP parser consumed from the handle too (it reads without "data" events).
    const timer = setTimeout(() => {
      if (socket.bytesRead === 0) socket.destroy();
    }, ms);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  });
}
