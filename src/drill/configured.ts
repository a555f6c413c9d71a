import { openStorage, Repository } from '../backup/index.js';
import type { DrillSystem } from './environment.js';
import { type DrillTarget, requireBackupParts, targetHosts } from './target.js';

/**
 * The user's own system, named in bulwark.config.ts: the drill starts nothing there and owns nothing
 * of it, so stopping only says so. Built after the safety guard (assertTargetsAllowed) has passed;
 * nothing here contacts anything until a step runs.
 */
export class ConfiguredSystem implements DrillSystem {
  readonly url: string;
  readonly repo: Repository;
  readonly repoUri: string;
  private readonly pg: string;
  private readonly primaryName: string;

  constructor(target: DrillTarget) {
    const parts = requireBackupParts(target);
    this.url = target.url.replace(/\/+$/, '');
    this.pg = parts.pg;
    this.repoUri = parts.repo;
    this.repo = new Repository(openStorage(parts.repo, target.s3 ?? {}));
    // shown in logs and the journal: host and port only, never the user or password of the URL
    this.primaryName = targetHosts(target)
      .filter((h) => h.what.startsWith('database'))
      .map((h) => h.host)
      .join(',');
  }

  primary(): { name: string; url: string } {
    return { name: this.primaryName, url: this.pg };
  }

  async start(): Promise<void> {}

  async stop(): Promise<string[]> {
    return [`nothing started on ${this.url} or its database: the configured system was only used`];
  }
}
