import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { allErrorCodes } from '../../src/lib/errors.js';

// Every error code users can see must be documented (as fastify tests its error registry).
describe('error registry', () => {
  it('documents every error code in the README', async () => {
    // Importing each capability registers its codes.
    await Promise.all([
      import('../../src/load/index.js'),
      import('../../src/backup/index.js'),
      import('../../src/cluster/index.js'),
      import('../../src/deploy/index.js'),
      import('../../src/drill/index.js'),
    ]);
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const missing = Object.keys(allErrorCodes()).filter((code) => !readme.includes(`\`${code}\``));
    expect(missing).toEqual([]);
  });
});
