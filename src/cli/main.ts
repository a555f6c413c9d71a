#!/usr/bin/env -S node --heap-growing-percent=25
// The V8 flag above is part of the load generator's design, measured with bench/load-throughput:
// growing the old generation by 25 % at a time (instead of V8's adaptive factor, up to 2x) keeps
// 10,000 thinking VUs near 200 MB of RSS instead of 400 MB at the same req/s. It changes when the GC
// runs, not what it keeps. (A smaller young generation saved RSS at 50 VUs but cost a third of the
// throughput at 1,000 connections, so the young generation keeps V8's default.)
const argv = process.argv.slice(2);
// archive_command runs `bulwark wal push` once per WAL segment: skip loading every other command
const fast = argv[0] === 'wal' ? await (await import('./commands/backup.js')).walFastPath(argv) : undefined;
const code = fast ?? (await (await import('./program.js')).runCli(argv));
// Let pending output flush; commands that keep servers running never return here.
process.exitCode = code;
if (process.env.BULWARK_NO_FORCE_EXIT !== '1') setImmediate(() => process.exit(code));
