#!/usr/bin/env -S node --max-semi-space-size=2 --heap-growing-percent=25
// The V8 flags above are part of the load generator's design, measured with bench/load-throughput:
// a 2 MB young generation keeps a 50-VU run's steady RSS near 80 MB instead of 110 MB at the same
// req/s, and growing the old generation by 25 % (instead of V8's adaptive, up to 2x) keeps 10,000
// thinking VUs near 200 MB instead of 400 MB. Both only change when the GC runs, not what it keeps.
const argv = process.argv.slice(2);
// archive_command runs `bulwark wal push` once per WAL segment: skip loading every other command
const fast = argv[0] === 'wal' ? await (await import('./commands/backup.js')).walFastPath(argv) : undefined;
const code = fast ?? (await (await import('./program.js')).runCli(argv));
// Let pending output flush; commands that keep servers running never return here.
process.exitCode = code;
if (process.env.BULWARK_NO_FORCE_EXIT !== '1') setImmediate(() => process.exit(code));
