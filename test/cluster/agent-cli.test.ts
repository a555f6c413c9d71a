import { describe, expect, it } from 'vitest';
import { runCli } from '../harness/cli.js';

/** Bad input to the agent commands: one line naming what is wrong, exit code 2, before any connection. */
describe('cluster agent CLI: bad input', () => {
  const agent = ['cluster', 'agent', '--name', 'db1', '--data-dir', '/tmp/none', '--host', '127.0.0.1'];
  const cases: Array<[string[], RegExp]> = [
    [[...agent], /--etcd is required/],
    [[...agent, '--etcd', 'ftp://x'], /--etcd: not an http\(s\) URL/],
    [[...agent, '--etcd', 'http://127.0.0.1:9', '--ttl', '1'], /--ttl must be whole seconds, at least 3/],
    [[...agent, '--etcd', 'http://127.0.0.1:9', '--allow', '10.0.0.0/99'], /--allow must be a network/],
    [[...agent, '--etcd', 'http://127.0.0.1:9', '--api', 'nowhere'], /--api must be host:port/],
    [
      ['cluster', 'agent', '--name', 'Bad-Name', '--data-dir', '/tmp/x', '--host', 'h', '--etcd', 'http://h:1'],
      /--name must be/,
    ],
    [['cluster', 'tag', '--etcd', 'http://127.0.0.1:9', '--name', 'db1'], /nothing to set/],
    [
      ['cluster', 'tag', '--etcd', 'http://127.0.0.1:9', '--name', 'db1', '--nofailover', '--failover'],
      /exclude each other/,
    ],
    [['cluster', 'set', '--etcd', 'http://127.0.0.1:9', '--set', 'bad key=1'], /--set expects key=value/],
    [['cluster', 'set', '--etcd', 'http://127.0.0.1:9', '--sync', 'maybe'], /--sync must be on or off/],
    [['cluster', 'members', '--scope', 'a b', '--etcd', 'http://127.0.0.1:9'], /--scope must be/],
    [
      ['cluster', 'switchover', '--etcd', 'http://127.0.0.1:9', '--to', 'db2', '--at', 'tomorrow'],
      /--at must be a date/,
    ],
  ];
  for (const [args, message] of cases)
    it(`${args.slice(1).join(' ')} -> exit 2`, async () => {
      const r = await runCli(args, { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    });
});
