import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '../daemon/api/client.js';
import { NydusError, errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { Supervisor } from '../supervisor/supervisor.js';
import { isMounted } from '../util/mounts.js';
import type { DaemonMode, DaemonRecord, InstanceRecord, NydusStore } from './store.js';

/**
 * The nydusd processes of the snapshotter (upstream-surface §7.4, §7.8). Dedicated mode starts
 * one nydusd per image (per Nydus meta snapshot), mounted at `<root>/snapshots/<id>/mnt` with the
 * image's bootstrap; shared mode starts one nydusd at `<root>/mnt` with no bootstrap and adds each
 * image through `POST /api/v1/mount?mountpoint=/<id>`. Daemons are started in their own session
 * so they outlive the snapshotter; their records in nydus.db let a restarted snapshotter
 * reconnect to them, or restart the dead ones and mount their images again.
 */

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const WATCH_INTERVAL_MS = 1_000;
/** How long a state transfer through the supervisor may take. */
const SUPERVISOR_TIMEOUT_MS = 10_000;
export const SHARED_DAEMON_ID = 'shared_daemon';

export type RecoverPolicy = 'none' | 'restart' | 'failover';

export interface DaemonManagerOptions {
  root: string;
  mode: DaemonMode;
  /** The nydusd command: a binary, or [node, script]. */
  nydusd: string[];
  store: NydusStore;
  recoverPolicy: RecoverPolicy;
  /** `--thread-num` (0: nydusd's default). */
  threads: number;
  /** nydusd's `--log-level`. */
  logLevel: string;
  /** nydusd's `--failover-policy` (how a successor treats requests its predecessor had read). */
  failoverPolicy: 'none' | 'resend' | 'flush';
  log: Logger;
  /** Prefetch lists by image reference (the system controller's PUT /api/v1/prefetch). */
  prefetch?: Map<string, string>;
}

export interface MountInstance {
  snapshotId: string;
  imageRef: string;
  bootstrap: string;
  /** The nydusd config of this image. */
  config: Record<string, unknown>;
}

interface Live {
  rec: DaemonRecord;
  client: ApiClient;
  child?: ChildProcess | undefined;
  /** Set while we stop it on purpose, so its exit is not a crash. */
  stopping: boolean;
  /** Keeps the daemon's FUSE connection and state while it runs (recover_policy restart or
   * failover), so a successor can take the same mount over. */
  supervisor?: Supervisor | undefined;
  recovering?: Promise<void> | undefined;
}

/** Is `pid` a live (not zombie) process? */
export function pidAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Send `sig` to `pid` if it is alive; a process that is gone meanwhile is no error. */
function signal(pid: number, sig: NodeJS.Signals): void {
  if (!pidAlive(pid)) return;
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** Wait (at most STOP_TIMEOUT_MS) for `pid` to end; true when it did. */
async function waitGone(pid: number): Promise<boolean> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(25);
  return !pidAlive(pid);
}

function lastLines(file: string, n = 3): string {
  try {
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    return lines.slice(-n).join(' | ');
  } catch {
    return '(no log)';
  }
}

export class DaemonManager {
  readonly #o: DaemonManagerOptions;
  /** The nydusd command for new daemons (a hot upgrade changes it). */
  #nydusd: string[];
  readonly #live = new Map<string, Live>();
  #watch: NodeJS.Timeout | undefined;
  #closed = false;
  /** Serialises daemon starts and instance changes. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(o: DaemonManagerOptions) {
    this.#o = o;
    this.#nydusd = o.nydusd;
  }

  get mode(): DaemonMode {
    return this.#o.mode;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  daemons(): DaemonRecord[] {
    return [...this.#live.values()].map((l) => l.rec);
  }

  /** Reconnect to the daemons nydus.db lists; restart dead ones when the policy says so. */
  async recover(): Promise<void> {
    for (const rec of this.#o.store.daemons()) {
      const live: Live = { rec, client: new ApiClient(rec.apiSock, { timeoutMs: 10_000 }), stopping: false };
      this.#live.set(rec.id, live);
      if (pidAlive(rec.pid) && (await this.state(live)) !== undefined) {
        this.#o.log.info(`Reconnected to nydusd ${rec.id} (pid ${rec.pid})`);
        // The connection the old snapshotter kept went with it: keep it again.
        await this.saveStates(live);
        continue;
      }
      if (this.#o.recoverPolicy === 'none') {
        this.#o.log.warn(
          `nydusd ${rec.id} is not running and recover_policy is none: its images are unavailable`,
        );
        continue;
      }
      this.#o.log.warn(`nydusd ${rec.id} is not running: starting it again`);
      try {
        await this.restart(live);
      } catch (e) {
        this.#o.log.error(`Cannot restart nydusd ${rec.id}: ${errorText(e)}`);
      }
    }
    this.#watch = setInterval(() => this.checkLiveness(), WATCH_INTERVAL_MS);
    this.#watch.unref();
  }

  private checkLiveness(): void {
    if (this.#closed) return;
    for (const live of this.#live.values()) {
      if (live.stopping || live.recovering !== undefined || live.child !== undefined) continue;
      if (!pidAlive(live.rec.pid)) this.onDeath(live);
    }
  }

  private onDeath(live: Live): void {
    if (this.#closed || live.stopping || live.recovering !== undefined) return;
    const { rec } = live;
    this.#o.log.warn(`nydusd ${rec.id} (pid ${rec.pid}) died; recover_policy ${this.#o.recoverPolicy}`);
    if (this.#o.recoverPolicy === 'none') return;
    live.recovering = this.restart(live)
      .catch((e: unknown) => this.#o.log.error(`Cannot restart nydusd ${rec.id}: ${errorText(e)}`))
      .finally(() => {
        live.recovering = undefined;
      });
  }

  private async state(live: Live): Promise<string | undefined> {
    try {
      const info = (await live.client.get('/api/v1/daemon')) as { state?: unknown };
      return typeof info.state === 'string' ? info.state : undefined;
    } catch {
      return undefined;
    }
  }

  /** Start the process of a record and wait until it is RUNNING. */
  private async launch(live: Live, opts: { upgrade?: boolean } = {}): Promise<void> {
    const { rec } = live;
    const want = opts.upgrade === true ? 'INIT' : 'RUNNING';
    mkdirSync(dirname(rec.apiSock), { recursive: true });
    mkdirSync(dirname(rec.logFile), { recursive: true });
    if (opts.upgrade !== true) mkdirSync(rec.mountpoint, { recursive: true });
    rmSync(rec.apiSock, { force: true });
    const [cmd, ...args] = [...rec.command, ...(opts.upgrade === true ? ['--upgrade'] : [])];
    this.#o.log.info(`Starting nydusd ${rec.id}: ${rec.command.join(' ')}`);
    const out = openSync(`${rec.logFile}.stderr`, 'a');
    let child: ChildProcess;
    try {
      child = spawn(cmd!, args, { detached: true, stdio: ['ignore', out, out] });
    } finally {
      closeSync(out);
    }
    child.unref();
    const spawnError = new Promise<Error>((res) => child.once('error', res));
    let exitCode: number | null | undefined;
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal !== null ? -1 : null);
      if (live.child === child) live.child = undefined;
      if (!live.stopping && live.rec.pid === child.pid) this.onDeath(live);
    });
    live.child = child;
    rec.pid = child.pid ?? 0;
    rec.startedAt = Date.now();
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const failed = await Promise.race([spawnError, sleep(50).then(() => undefined)]);
      if (failed !== undefined)
        throw new NydusError('ERR_IO', `Cannot start nydusd "${cmd}": ${failed.message}`);
      if (exitCode !== undefined) {
        throw new NydusError(
          'ERR_IO',
          `nydusd ${rec.id} exited before it was running: ${lastLines(`${rec.logFile}.stderr`)} ${lastLines(rec.logFile)}`,
        );
      }
      if ((await this.state(live)) === want) break;
      if (Date.now() > deadline) {
        live.stopping = true;
        child.kill('SIGKILL');
        throw new NydusError(
          'ERR_TIMEOUT',
          `nydusd ${rec.id} was not running within ${START_TIMEOUT_MS / 1000} s`,
        );
      }
    }
    this.#o.store.putDaemon(rec);
  }

  private async restart(live: Live): Promise<void> {
    const { rec } = live;
    if (live.supervisor?.hasStates() === true) {
      try {
        await this.takeover(live);
        return;
      } catch (e) {
        this.#o.log.error(`Takeover for nydusd ${rec.id} failed, mounting its images anew: ${errorText(e)}`);
        signal(rec.pid, 'SIGKILL');
      }
    }
    // A dead FUSE server leaves its mount behind ("transport endpoint is not connected").
    this.lazyUmount(rec.mountpoint);
    if (rec.mode === 'shared') {
      for (const i of this.#o.store.instances(rec.id)) this.lazyUmount(i.mountpoint);
    }
    live.stopping = false;
    await this.launch(live);
    if (rec.mode === 'shared') {
      for (const i of this.#o.store.instances(rec.id)) {
        await live.client.post(
          '/api/v1/mount',
          { source: i.bootstrap, fs_type: 'rafs', config: readFileSync(i.configPath, 'utf8') },
          { mountpoint: i.pseudoPath ?? `/${i.snapshotId}` },
        );
      }
    }
    await this.saveStates(live);
    this.#o.log.info(`nydusd ${rec.id} is running again (pid ${rec.pid}), images mounted anew`);
  }

  /**
   * Failover: a new nydusd in upgrade mode takes the kept FUSE connection and state over
   * through the supervisor and starts serving the same mount, so readers in running containers
   * see no error (requests the dead daemon had read are resent by the kernel).
   */
  private async takeover(live: Live): Promise<void> {
    const { rec } = live;
    const sup = live.supervisor!;
    live.stopping = false;
    await this.startSuccessor(live, sup);
    await live.client.put('/api/v1/daemon/start');
    await this.waitState(live, 'RUNNING');
    this.#o.store.putDaemon(rec);
    await this.saveStates(live);
    this.#o.log.info(`nydusd ${rec.id} took over its mount (pid ${rec.pid})`);
  }

  /**
   * Hot upgrade (the system controller's PUT /api/v1/daemons/upgrade): every daemon is replaced
   * by `nydusd` without unmounting. The new binary starts in upgrade mode on the next API socket
   * name (api1.sock, api2.sock, ...), takes the kept connection and state over, the old daemon
   * exits through its API, and the new one starts. New daemons use the new binary too.
   */
  upgrade(nydusd: string[]): Promise<void> {
    if (this.#o.recoverPolicy !== 'failover') {
      return Promise.reject(
        new NydusError('ERR_FAILED_PRECONDITION', 'Hot upgrade needs recover_policy = "failover"'),
      );
    }
    return this.serial(async () => {
      for (const live of [...this.#live.values()]) await this.upgradeOne(live, nydusd);
      this.#nydusd = nydusd;
    });
  }

  private async upgradeOne(old: Live, nydusd: string[]): Promise<void> {
    const { rec } = old;
    const sup = old.supervisor;
    if (sup === undefined || !sup.hasStates()) {
      throw new NydusError('ERR_FAILED_PRECONDITION', `nydusd ${rec.id} has no kept state to hand over`);
    }
    const m = /^api(\d*)\.sock$/.exec(rec.apiSock.slice(rec.apiSock.lastIndexOf('/') + 1));
    const apiSock = join(
      dirname(rec.apiSock),
      `api${m === null ? 1 : Number(m[1] === '' ? 0 : m[1]) + 1}.sock`,
    );
    const tail = rec.command.slice(rec.command.indexOf('fuse'));
    const at = tail.indexOf('--apisock');
    if (at >= 0) tail[at + 1] = apiSock;
    const next: Live = {
      rec: { ...rec, apiSock, command: [...nydusd, ...tail], pid: 0 },
      client: new ApiClient(apiSock, { timeoutMs: 60_000 }),
      stopping: false,
      supervisor: sup,
    };
    this.#o.log.info(`Upgrading nydusd ${rec.id} to ${nydusd.join(' ')}`);
    await this.startSuccessor(next, sup);
    // The old daemon leaves without unmounting; the new one serves from here on.
    old.stopping = true;
    await old.client
      .put('/api/v1/daemon/exit')
      .catch((e: unknown) =>
        this.#o.log.warn(`Old nydusd ${rec.id} did not take the exit request: ${errorText(e)}`),
      );
    if (!(await waitGone(rec.pid))) signal(rec.pid, 'SIGKILL');
    await old.client.close().catch(() => undefined);
    await next.client.put('/api/v1/daemon/start');
    await this.waitState(next, 'RUNNING');
    this.#live.set(rec.id, next);
    this.#o.store.putDaemon(next.rec);
    rmSync(rec.apiSock, { force: true });
    await this.saveStates(next);
    this.#o.log.info(`nydusd ${rec.id} upgraded (pid ${next.rec.pid}, API ${apiSock})`);
  }

  /** Start `live`'s process in upgrade mode and have it take the supervisor's kept connection
   * and state over (it is then READY, not yet serving). */
  private async startSuccessor(live: Live, sup: Supervisor): Promise<void> {
    await this.launch(live, { upgrade: true });
    const sent = sup.sendStates(SUPERVISOR_TIMEOUT_MS);
    try {
      await live.client.put('/api/v1/daemon/fuse/takeover');
    } finally {
      await sent.catch((e: unknown) => this.#o.log.warn(`Supervisor of ${live.rec.id}: ${errorText(e)}`));
    }
  }

  /** Ask nydusd to hand its FUSE fd and state to the supervisor (kept for a takeover). */
  private async saveStates(live: Live): Promise<void> {
    if (this.#o.recoverPolicy === 'none' || live.rec.supervisor === undefined) return;
    mkdirSync(dirname(live.rec.supervisor), { recursive: true, mode: 0o700 });
    live.supervisor ??= new Supervisor(live.rec.supervisor, this.#o.log);
    const got = live.supervisor.waitStates(SUPERVISOR_TIMEOUT_MS);
    try {
      await live.client.put('/api/v1/daemon/fuse/sendfd');
      await got;
    } catch (e) {
      await got.catch(() => undefined);
      this.#o.log.warn(
        `nydusd ${live.rec.id} did not hand its connection to the supervisor: ${errorText(e)}`,
      );
    }
  }

  private async waitState(live: Live, want: string): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while ((await this.state(live)) !== want) {
      if (Date.now() > deadline) {
        throw new NydusError(
          'ERR_TIMEOUT',
          `nydusd ${live.rec.id} did not reach ${want} within ${START_TIMEOUT_MS / 1000} s`,
        );
      }
      await sleep(50);
    }
  }

  private lazyUmount(path: string): void {
    if (isMounted(path)) spawnSync('umount', ['-l', path], { timeout: STOP_TIMEOUT_MS });
  }

  private baseArgs(id: string, apiSock: string, mountpoint: string, logFile: string): string[] {
    const supervised =
      this.#o.recoverPolicy === 'none'
        ? []
        : ['--id', id, '--supervisor', this.supervisorPath(id), '--failover-policy', this.#o.failoverPolicy];
    return [
      ...this.#nydusd,
      'fuse',
      '--mountpoint',
      mountpoint,
      '--apisock',
      apiSock,
      '--log-level',
      this.#o.logLevel,
      '--log-file',
      logFile,
      ...(this.#o.threads > 0 ? ['--thread-num', String(this.#o.threads)] : []),
      ...supervised,
    ];
  }

  private supervisorPath(id: string): string {
    return join(this.#o.root, 'supervisor', `${id}.sock`);
  }

  private paths(id: string): { apiSock: string; logFile: string; configDir: string } {
    const r = this.#o.root;
    return {
      apiSock: join(r, 'socket', id, 'api.sock'),
      logFile: join(r, 'logs', id, 'nydusd.log'),
      configDir: join(r, 'config', id),
    };
  }

  private async sharedDaemon(): Promise<Live> {
    const have = this.#live.get(SHARED_DAEMON_ID);
    if (have !== undefined) {
      await have.recovering;
      return have;
    }
    const p = this.paths(SHARED_DAEMON_ID);
    const mountpoint = join(this.#o.root, 'mnt');
    const rec: DaemonRecord = {
      id: SHARED_DAEMON_ID,
      mode: 'shared',
      pid: 0,
      apiSock: p.apiSock,
      mountpoint,
      command: this.baseArgs(SHARED_DAEMON_ID, p.apiSock, mountpoint, p.logFile),
      logFile: p.logFile,
      ...(this.#o.recoverPolicy !== 'none' ? { supervisor: this.supervisorPath(SHARED_DAEMON_ID) } : {}),
      startedAt: 0,
    };
    const live: Live = { rec, client: new ApiClient(rec.apiSock, { timeoutMs: 60_000 }), stopping: false };
    this.lazyUmount(mountpoint);
    await this.launch(live);
    this.#live.set(rec.id, live);
    await this.saveStates(live);
    return live;
  }

  /** Where an image's file system is, mounting it first when it is not. */
  mount(inst: MountInstance, snapshotDir: string): Promise<string> {
    return this.serial(async () => {
      const have = this.#o.store.instance(inst.snapshotId);
      if (have !== undefined) {
        const live = this.#live.get(have.daemonId);
        if (live !== undefined) {
          await live.recovering;
          return have.mountpoint;
        }
        this.#o.store.deleteInstance(inst.snapshotId);
      }
      return this.#o.mode === 'shared' ? this.mountShared(inst) : this.mountDedicated(inst, snapshotDir);
    });
  }

  private async mountDedicated(inst: MountInstance, snapshotDir: string): Promise<string> {
    const id = randomBytes(8).toString('hex');
    const p = this.paths(id);
    const mountpoint = join(snapshotDir, 'mnt');
    const configPath = join(p.configDir, 'config.json');
    mkdirSync(p.configDir, { recursive: true });
    writeFileSync(configPath, JSON.stringify(inst.config, null, 2), { mode: 0o600 });
    const prefetch = this.prefetchList(inst.imageRef);
    const prefetchArgs: string[] = [];
    if (prefetch.length > 0) {
      const listPath = join(p.configDir, 'prefetch-files');
      writeFileSync(listPath, `${prefetch.join('\n')}\n`);
      prefetchArgs.push('--prefetch-files', listPath);
    }
    const rec: DaemonRecord = {
      id,
      mode: 'dedicated',
      pid: 0,
      apiSock: p.apiSock,
      mountpoint,
      command: [
        ...this.baseArgs(id, p.apiSock, mountpoint, p.logFile),
        '--config',
        configPath,
        '--bootstrap',
        inst.bootstrap,
        ...prefetchArgs,
      ],
      logFile: p.logFile,
      ...(this.#o.recoverPolicy !== 'none' ? { supervisor: this.supervisorPath(id) } : {}),
      startedAt: 0,
    };
    const live: Live = { rec, client: new ApiClient(rec.apiSock, { timeoutMs: 60_000 }), stopping: false };
    this.lazyUmount(mountpoint);
    try {
      await this.launch(live);
    } catch (e) {
      live.stopping = true;
      this.cleanupDaemonFiles(rec);
      throw e;
    }
    this.#live.set(id, live);
    await this.saveStates(live);
    this.#o.store.putInstance({
      snapshotId: inst.snapshotId,
      daemonId: id,
      imageRef: inst.imageRef,
      bootstrap: inst.bootstrap,
      mountpoint,
      configPath,
    });
    return mountpoint;
  }

  private async mountShared(inst: MountInstance): Promise<string> {
    const live = await this.sharedDaemon();
    const p = this.paths(SHARED_DAEMON_ID);
    const configPath = join(p.configDir, inst.snapshotId, 'config.json');
    mkdirSync(dirname(configPath), { recursive: true });
    const text = JSON.stringify(inst.config, null, 2);
    writeFileSync(configPath, text, { mode: 0o600 });
    const pseudoPath = `/${inst.snapshotId}`;
    const prefetch = this.prefetchList(inst.imageRef);
    await live.client.post(
      '/api/v1/mount',
      {
        source: inst.bootstrap,
        fs_type: 'rafs',
        config: text,
        ...(prefetch.length > 0 ? { prefetch_files: prefetch } : {}),
      },
      { mountpoint: pseudoPath },
    );
    const mountpoint = join(live.rec.mountpoint, inst.snapshotId);
    this.#o.store.putInstance({
      snapshotId: inst.snapshotId,
      daemonId: SHARED_DAEMON_ID,
      imageRef: inst.imageRef,
      bootstrap: inst.bootstrap,
      mountpoint,
      configPath,
      pseudoPath,
    });
    // The kept state must name every image, or a successor would lose this one.
    await this.saveStates(live);
    return mountpoint;
  }

  private prefetchList(imageRef: string): string[] {
    const text = this.#o.prefetch?.get(imageRef);
    if (text === undefined) return [];
    return text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('/'));
  }

  /** Unmount an image; a dedicated daemon is stopped, the shared one stays. */
  umount(snapshotId: string): Promise<void> {
    return this.serial(async () => {
      const inst = this.#o.store.instance(snapshotId);
      if (inst === undefined) return;
      const live = this.#live.get(inst.daemonId);
      if (live === undefined) {
        this.#o.store.deleteInstance(snapshotId);
        return;
      }
      if (live.rec.mode === 'shared') {
        try {
          await live.client.delete('/api/v1/mount', { mountpoint: inst.pseudoPath ?? `/${snapshotId}` });
        } catch (e) {
          this.#o.log.warn(
            `Cannot unmount ${inst.pseudoPath ?? snapshotId} from the shared nydusd: ${errorText(e)}`,
          );
        }
        this.#o.store.deleteInstance(snapshotId);
        rmSync(dirname(inst.configPath), { recursive: true, force: true });
        await this.saveStates(live);
        return;
      }
      await this.stopDaemon(live);
    });
  }

  private async stopDaemon(live: Live): Promise<void> {
    const { rec } = live;
    live.stopping = true;
    signal(rec.pid, 'SIGTERM');
    if (!(await waitGone(rec.pid))) {
      this.#o.log.warn(`nydusd ${rec.id} did not stop within ${STOP_TIMEOUT_MS / 1000} s: killing it`);
      signal(rec.pid, 'SIGKILL');
    }
    this.lazyUmount(rec.mountpoint);
    live.supervisor?.close();
    await live.client.close().catch(() => undefined);
    this.#live.delete(rec.id);
    this.#o.store.deleteDaemon(rec.id);
    this.cleanupDaemonFiles(rec);
  }

  private cleanupDaemonFiles(rec: DaemonRecord): void {
    const p = this.paths(rec.id);
    rmSync(dirname(p.apiSock), { recursive: true, force: true });
    rmSync(p.configDir, { recursive: true, force: true });
    rmSync(this.supervisorPath(rec.id), { force: true });
  }

  /** Is the image of this meta snapshot mounted by a daemon we know? */
  hasInstance(snapshotId: string): boolean {
    const i = this.#o.store.instance(snapshotId);
    return i !== undefined && this.#live.has(i.daemonId);
  }

  /** Instances whose daemon is known. */
  instances(): InstanceRecord[] {
    return this.#o.store.instances();
  }

  /** The blob cache files every running instance uses (for Cleanup), or undefined when some
   * daemon cannot say. */
  async usedCacheFiles(): Promise<Set<string> | undefined> {
    const used = new Set<string>();
    for (const live of this.#live.values()) {
      // A shared daemon answers per instance (?id=<pseudo path>), a dedicated one for its only one.
      const ids =
        live.rec.mode === 'shared'
          ? this.#o.store.instances(live.rec.id).map((i) => i.pseudoPath ?? `/${i.snapshotId}`)
          : [undefined];
      for (const id of ids) {
        let m: unknown;
        try {
          m = await live.client.get('/api/v1/metrics/blobcache', id === undefined ? undefined : { id });
        } catch {
          return undefined;
        }
        const files = (m as { underlying_files?: unknown }).underlying_files;
        if (Array.isArray(files)) for (const f of files) if (typeof f === 'string') used.add(f);
      }
    }
    return used;
  }

  /** Stop watching; with `teardown`, stop every daemon and unmount everything. */
  async close(teardown: boolean): Promise<void> {
    this.#closed = true;
    if (this.#watch !== undefined) clearInterval(this.#watch);
    await this.#queue;
    for (const live of [...this.#live.values()]) {
      if (teardown) await this.stopDaemon(live);
      else {
        live.stopping = true;
        live.supervisor?.close();
        await live.client.close().catch(() => undefined);
      }
    }
  }
}
