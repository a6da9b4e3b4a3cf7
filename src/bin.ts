#!/usr/bin/env node
/** Entry point of the `registry-token-exchange` command (package `bin`). See `cli.ts`. */
import { main } from "./cli.js";

void main(process.argv);
