import { readFileSync, writeFileSync } from 'node:fs';
import { ApiClient } from '../daemon/api/client.js';
import { errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { parseReference } from '../oci/reference.js';
import type { DaemonManager } from './daemons.js';
import type { Keychain } from './keychain.js';
import { backendOf, type JsonObject } from './nydusd-config.js';

/**
 * Credential renewal (`[remote.auth] credential_renewal_interval`, upstream-surface §7.9): every
 * interval the credentials of each mounted image are looked up again; when they changed, the
 * running nydusd gets them at once (`PUT /api/v1/config?id=<instance>` with `registry_auth`)
 * and the image's config file is rewritten, so a restarted daemon starts with them too.
 */

export interface RenewalStats {
  /** Renewals by result, for the metrics. */
  counts: Map<string, number>;
}

export class CredentialRenewal {
  readonly stats: RenewalStats = { counts: new Map() };
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(
    private readonly daemons: DaemonManager,
    private readonly keychain: Keychain,
    private readonly log: Logger,
  ) {}

  start(intervalMs: number): void {
    this.#timer = setInterval(() => {
      this.#running ??= this.renewAll().finally(() => (this.#running = undefined));
    }, intervalMs);
    this.#timer.unref();
  }

  private count(result: string): void {
    this.stats.counts.set(result, (this.stats.counts.get(result) ?? 0) + 1);
  }

  /** One round over every mounted image. */
  async renewAll(): Promise<void> {
    const daemons = new Map(this.daemons.daemons().map((d) => [d.id, d]));
    for (const inst of this.daemons.instances()) {
      const d = daemons.get(inst.daemonId);
      if (d === undefined) continue;
      try {
        const cfg = JSON.parse(readFileSync(inst.configPath, 'utf8')) as JsonObject;
        const { type, config } = backendOf(cfg);
        if (type !== 'registry') continue;
        const access = await this.keychain.forImage(parseReference(inst.imageRef), {});
        const auth = access?.auth;
        if (auth === undefined || auth === config['auth']) {
          this.count('unchanged');
          continue;
        }
        const client = new ApiClient(d.apiSock, { timeoutMs: 10_000 });
        try {
          await client.put('/api/v1/config', { registry_auth: auth }, { id: inst.pseudoPath ?? '/' });
        } finally {
          await client.close();
        }
        config['auth'] = auth;
        writeFileSync(inst.configPath, JSON.stringify(cfg, null, 2), { mode: 0o600 });
        this.count('renewed');
        this.log.info(`Credentials of image ${inst.imageRef} renewed (from ${access?.source ?? 'nowhere'})`);
      } catch (e) {
        this.count('failed');
        this.log.warn(`Cannot renew the credentials of image ${inst.imageRef}: ${errorText(e)}`);
      }
    }
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.#running;
  }
}
