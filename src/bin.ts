#!/usr/bin/env node
/** Entry point of the `registry-token-exchange` command (package `bin`). See `cli/index.ts`. */
import { setFlagsFromString } from "node:v8";
import { main } from "./cli/index.js";

// WebAssembly is compiled by V8's baseline compiler (Liftoff) only. The one WebAssembly module the
// service runs is undici's HTTP response parser (llhttp, for JWKS, discovery and API server calls);
// V8 otherwise recompiles it with its optimizing compiler on the first outbound responses, which takes
// ~30 MiB of memory for a moment and leaves ~9 MiB more resident, for no measurable gain in request
// cost. Set before any WebAssembly is compiled (undici compiles it on its first connection), as V8
// reads the flag at compile time.
setFlagsFromString("--liftoff-only");

void main(process.argv);
