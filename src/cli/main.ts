#!/usr/bin/env -S node --max-semi-space-size=2
import { runCli } from './program.js';

const code = await runCli(process.argv.slice(2));
// Let pending output flush; commands that keep servers running never return here.
process.exitCode = code;
if (process.env.BULWARK_NO_FORCE_EXIT !== '1') setImmediate(() => process.exit(code));
