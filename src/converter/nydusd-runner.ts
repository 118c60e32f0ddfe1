import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { registryApiHost, type Reference } from '../oci/reference.js';
import { credentialsFor, type Credentials } from '../registry/docker-config.js';
import { mountPoints } from '../util/mounts.js';

/**
 * Running nydusd for `nydusify mount` and `nydusify check`: a config for the registry backend
 * derived from an image reference, and a child daemon started, waited for and stopped.
 */

/** How long a started nydusd may take to show its mount. */
const START_TIMEOUT_MS = 60_000;
/** How long a stopping nydusd may take to unmount and exit before it is killed. */
const STOP_TIMEOUT_MS = 20_000;

/** base64 `user:pass` of credentials, as nydusd's registry `auth` takes them. */
function authOf(c: Credentials | undefined): string | undefined {
  if (c === undefined || !('username' in c)) return undefined;
  return Buffer.from(`${c.username}:${c.password}`).toString('base64');
}

export interface RegistryBackendFor {
  ref: Reference;
  /** The registry speaks plain HTTP. */
  plainHttp: boolean;
  /** Skip TLS verification. */
  insecure: boolean;
  env?: NodeJS.ProcessEnv;
}

/** The `registry` backend table (v2 names) nydusd needs to read the blobs of `ref`. */
export async function registryBackendConfig(o: RegistryBackendFor): Promise<Record<string, unknown>> {
  const host = registryApiHost(o.ref.host);
  const auth = authOf(await credentialsFor(o.ref.host, o.env));
  return {
    scheme: o.plainHttp ? 'http' : 'https',
    host,
    repo: o.ref.repository,
    skip_verify: o.insecure,
    timeout: 30,
    connect_timeout: 10,
    retry_limit: 3,
    ...(auth !== undefined ? { auth } : {}),
  };
}

/** A v2 nydusd config: `backend` as given, a blob cache in `cacheDir`, prefetch when asked. */
export function daemonConfig(
  backend: { type: string; config: Record<string, unknown> },
  cacheDir: string,
  prefetch: boolean,
): Record<string, unknown> {
  const pf = { enable: prefetch, threads: 4, prefetch_all: prefetch };
  return {
    version: 2,
    backend: { type: backend.type, [backend.type]: backend.config },
    cache: { type: 'blobcache', filecache: { work_dir: cacheDir }, prefetch: pf },
    rafs: { mode: 'direct', enable_xattr: true, prefetch: pf },
  };
}

/** Our own nydusd entry, next to this file once built (dist/src/cli/nydusd.cjs). */
function bundledNydusd(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const p = join(here, '..', 'cli', 'nydusd.cjs');
  return existsSync(p) ? p : undefined;
}

/** Whether nydusd's mount shows at `mnt` (mountinfo only: a dead mount is never touched). */
export function isMounted(mnt: string): boolean {
  return mountPoints().includes(resolve(mnt));
}

export interface NydusdOptions {
  /** A nydusd binary; default: this package's own. */
  nydusd?: string;
  configFile: string;
  bootstrap: string;
  mountpoint: string;
  apisock?: string;
  logLevel?: string;
  logFile?: string;
  log: Logger;
}

/** A nydusd started by us. */
export class NydusdProcess {
  readonly child: ChildProcess;
  readonly mountpoint: string;
  readonly exited: Promise<number | null>;
  #stderr = '';
  #code: number | null | undefined;

  private constructor(child: ChildProcess, mountpoint: string) {
    this.child = child;
    this.mountpoint = mountpoint;
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.#stderr = (this.#stderr + d).slice(-16_384);
    });
    this.exited = new Promise((res) =>
      child.on('exit', (c) => {
        this.#code = c;
        res(c);
      }),
    );
  }

  /** The last lines nydusd wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Start nydusd and wait until its mount shows (or it exits, or the wait runs out). */
  static async start(o: NydusdOptions): Promise<NydusdProcess> {
    const args = [
      '--config',
      o.configFile,
      '--bootstrap',
      o.bootstrap,
      '--mountpoint',
      resolve(o.mountpoint),
      '--log-level',
      o.logLevel ?? 'info',
      ...(o.apisock !== undefined ? ['--apisock', o.apisock] : []),
      ...(o.logFile !== undefined ? ['--log-file', o.logFile] : []),
    ];
    const bundled = o.nydusd === undefined ? bundledNydusd() : undefined;
    const cmd = bundled !== undefined ? process.execPath : (o.nydusd ?? 'nydusd');
    const argv = bundled !== undefined ? [bundled, ...args] : args;
    o.log.debug(`Starting ${cmd} ${argv.join(' ')}`);
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    const spawnError = new Promise<Error>((res) => child.once('error', res));
    const d = new NydusdProcess(child, o.mountpoint);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (isMounted(o.mountpoint)) return d;
      const failed = await Promise.race([spawnError, sleep(25).then(() => undefined)]);
      if (failed !== undefined)
        throw new NydusError('ERR_IO', `Cannot start nydusd "${cmd}": ${failed.message}`);
      if (d.#code !== undefined)
        throw new NydusError(
          'ERR_IO',
          `nydusd exited with code ${String(d.#code)} before mounting: ${lastLine(d.#stderr)}`,
        );
      if (Date.now() > deadline) {
        await d.stop();
        throw new NydusError(
          'ERR_TIMEOUT',
          `nydusd did not mount ${o.mountpoint} within ${START_TIMEOUT_MS / 1000} s`,
        );
      }
    }
  }

  /** SIGTERM (nydusd unmounts and exits), then SIGKILL and a lazy unmount if it hangs. */
  async stop(): Promise<void> {
    if (this.#code === undefined && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const r = await Promise.race([
        this.exited,
        sleep(STOP_TIMEOUT_MS, undefined, { ref: false }).then(() => 'hung' as const),
      ]);
      if (r === 'hung') this.child.kill('SIGKILL');
    }
    if (isMounted(this.mountpoint))
      spawnSync('umount', ['-l', resolve(this.mountpoint)], { timeout: STOP_TIMEOUT_MS });
  }
}

function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}
