#!/usr/bin/env node
/** Entry point of the `registry-token-exchange` command (package `bin`). See `cli/index.ts`. */
import { main } from "./cli/index.js";

void main(process.argv);
