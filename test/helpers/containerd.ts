import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { criClient } from './cri.js';
import { IS_ROOT } from './env.js';
import { IN_CI } from './fixtures.js';
import {
  makeBusyboxLayout,
  processTempDir,
  pushLayout,
  type OciLayout,
  type PushOptions,
  type PushedImage,
} from './oci-images.js';
import { mountPointsUnder } from '../../src/util/mounts.js';

/**
 * A real containerd (Debian's 1.6) for tests, on its own root, state dir and socket under a temp
 * dir, with nothing shared with a system containerd but the runc shim binary. The CRI plugin
 * runs when asked for (pods with host networking need no CNI), pulls from plain-HTTP loopback
 * registries through hosts.toml files, and can use a proxy snapshotter named `nydus`.
 * `stop()` takes down every task, container, pod and shim it made, then containerd, its mounts
 * and its dirs; an exit hook does the same (without the API) if a test never calls it.
 */

/** Binaries a containerd test needs; the shim is what containerd starts for each container. */
const BINARIES = ['containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'ctr-remote'] as const;

/** PATH plus the sbin dirs, where Debian puts runc. */
const SEARCH_PATH = [
  ...(process.env['PATH'] ?? '').split(delimiter).filter((d) => d !== ''),
  '/usr/local/sbin',
  '/usr/local/bin',
  '/usr/sbin',
  '/usr/bin',
  '/sbin',
  '/bin',
];

/** The full path of a program found on PATH (or in an sbin dir), or undefined. */
export function findBinary(name: string): string | undefined {
  for (const d of SEARCH_PATH) {
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/**
 * For tests that run containerd: they need root and containerd, its runc shim, runc, ctr and
 * ctr-remote. Without them the test skips loudly; under CI=true that is a failure.
 */
export function needContainerd(t: TestContext): boolean {
  let why: string | undefined;
  if (!IS_ROOT) why = 'containerd tests need root';
  else {
    const missing = BINARIES.filter((b) => findBinary(b) === undefined);
    if (missing.length > 0)
      why = `${missing.join(', ')} not installed (apt-get install containerd runc stargz-snapshotter)`;
  }
  if (why === undefined) return true;
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CtrOptions {
  /** Kill ctr after this long and reject (default 60 s). */
  timeoutMs?: number;
  /** Run ctr-remote (ctr plus `image rpull`) instead of ctr. */
  remote?: boolean;
  /** The containerd namespace (default: the harness's own, `Containerd.namespace`). */
  namespace?: string;
}

export interface Containerd {
  /** The temp dir holding config, root, state, socket and log. */
  dir: string;
  /** containerd's gRPC socket. */
  sock: string;
  configPath: string;
  /** containerd's process id. */
  pid: number;
  /** The namespace `ctr()` uses unless told otherwise. CRI works in `k8s.io`. */
  namespace: string;
  /** Run `ctr -a SOCK -n NAMESPACE ...args` (or ctr-remote); never rejects on a non-zero exit. */
  ctr(args: readonly string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Digests in the content store, of every namespace, or of one. */
  contentDigests(namespace?: string): Promise<string[]>;
  /** What containerd wrote to stderr (the last 512 KiB). */
  log(): string;
  /** Kill every task, container, pod and shim, stop containerd, unmount and remove its dirs. */
  stop(): Promise<void>;
}

export interface StartContainerdOptions {
  /** Socket of a snapshotter to register as `[proxy_plugins.nydus]`. */
  snapshotterSock?: string;
  /** Run the CRI plugin (off without this). */
  cri?: {
    /** The CRI snapshotter (default overlayfs). */
    snapshotter?: string;
    /** Default true, as containerd's own default. */
    disableSnapshotAnnotations?: boolean;
    /** `sandbox_image`: the pause image pods start with (see pushPauseImage). */
    sandboxImage?: string;
    /** Registries ("host:port") served over plain HTTP. */
    plainHttpRegistries?: string[];
  };
  /** Extra environment for containerd (and so for its shims and mount helpers). */
  env?: Record<string, string>;
  /** containerd's log level (default info). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

const NAMESPACE = 'nydus-test';
/** The containerd namespace CRI pods, containers and images live in. */
export const CRI_NAMESPACE = 'k8s.io';
const LOG_LIMIT = 512 * 1024;
const START_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Leftovers: every harness is registered until stopped, so a test run that dies still takes its
// containerds, shims and mounts down.

interface Live {
  dir: string;
  sock: string;
  child: ChildProcess;
}

const live = new Set<Live>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const cleanUp = (): void => {
    for (const h of live) {
      h.child.kill('SIGKILL');
      killShims(h.sock);
      unmountUnder(h.dir);
      rmSync(h.dir, { recursive: true, force: true });
    }
    live.clear();
  };
  process.on('exit', cleanUp);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      cleanUp();
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** Mount points in this mount namespace at or below `dir`, in mount order. */
export const mountsUnder = mountPointsUnder;

/** Lazily unmount everything at or below `dir`, the most recent mounts first. */
function unmountUnder(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) return;
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        // gone with its parent, or not a mount any more
      }
    }
  }
}

function procEntries(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

function readArgv(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...; comm may hold spaces and parentheses
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return undefined;
  }
}

/** runc shims started by the containerd on `sock` (they name its address on their command line). */
export function shimsOf(sock: string): number[] {
  return procEntries().filter((pid) => {
    const argv = readArgv(pid);
    if (argv === undefined || !(argv[0] ?? '').includes('containerd-shim')) return false;
    const i = argv.indexOf('-address');
    return i >= 0 && argv[i + 1] === sock;
  });
}

/** SIGKILL the shims of `sock` and every process below them (the containers they keep). */
function killShims(sock: string): number[] {
  const shims = shimsOf(sock);
  if (shims.length === 0) return [];
  const pids = procEntries();
  const parent = new Map(pids.map((p) => [p, parentOf(p)]));
  const doomed = new Set(shims);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of pids) {
      const pp = parent.get(p);
      if (pp !== undefined && doomed.has(pp) && !doomed.has(p)) {
        doomed.add(p);
        grew = true;
      }
    }
  }
  // Children first, so a shim does not see its container die and start reaping work.
  for (const p of [...doomed].reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return [...doomed];
}

/** Is `pid` a live process (a zombie waiting for its parent to reap it counts as gone)? */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Config

/** A TOML basic string (JSON's escapes are a subset of TOML's for what we write). */
function q(s: string): string {
  return JSON.stringify(s);
}

function configToml(dir: string, sock: string, opts: StartContainerdOptions): string {
  const disabled = [
    'io.containerd.snapshotter.v1.aufs',
    'io.containerd.snapshotter.v1.btrfs',
    'io.containerd.snapshotter.v1.devmapper',
    'io.containerd.snapshotter.v1.zfs',
    'io.containerd.tracing.processor.v1.otlp',
    'io.containerd.internal.v1.tracing',
  ];
  if (opts.cri === undefined) disabled.push('io.containerd.grpc.v1.cri');
  const lines = [
    'version = 2',
    `root = ${q(join(dir, 'root'))}`,
    `state = ${q(join(dir, 'state'))}`,
    `disabled_plugins = [${disabled.map(q).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${q(sock)}`,
    '',
    '[ttrpc]',
    `  address = ${q(`${sock}.ttrpc`)}`,
    '',
    '[debug]',
    `  level = ${q(opts.logLevel ?? 'info')}`,
    '',
    '[plugins]',
    '  [plugins."io.containerd.internal.v1.opt"]',
    `    path = ${q(join(dir, 'opt'))}`,
  ];
  const cri = opts.cri;
  if (cri !== undefined) {
    const p = '[plugins."io.containerd.grpc.v1.cri"';
    lines.push(
      `  ${p}]`,
      `    sandbox_image = ${q(cri.sandboxImage ?? 'registry.invalid/pause:none')}`,
      '    stream_server_address = "127.0.0.1"',
      '    stream_server_port = "0"',
      '    enable_selinux = false',
      '    disable_apparmor = true',
      '    systemd_cgroup = false',
      // Pods ask for oom_score_adj -998, which needs CAP_SYS_RESOURCE that a test machine in a
      // container may lack; this keeps every score at or above containerd's own.
      '    restrict_oom_score_adj = true',
      `    ${p}.containerd]`,
      `      snapshotter = ${q(cri.snapshotter ?? 'overlayfs')}`,
      `      disable_snapshot_annotations = ${cri.disableSnapshotAnnotations ?? true}`,
      '      discard_unpacked_layers = false',
      '      default_runtime_name = "runc"',
      `      ${p}.containerd.runtimes.runc]`,
      '        runtime_type = "io.containerd.runc.v2"',
      `        ${p}.containerd.runtimes.runc.options]`,
      `          Root = ${q(join(dir, 'state', 'runc'))}`,
      '          SystemdCgroup = false',
      `    ${p}.cni]`,
      `      bin_dir = ${q(join(dir, 'cni', 'bin'))}`,
      `      conf_dir = ${q(join(dir, 'cni', 'conf'))}`,
      `    ${p}.registry]`,
      `      config_path = ${q(join(dir, 'certs.d'))}`,
    );
  }
  if (opts.snapshotterSock !== undefined) {
    lines.push(
      '',
      '[proxy_plugins]',
      '  [proxy_plugins.nydus]',
      '    type = "snapshot"',
      `    address = ${q(opts.snapshotterSock)}`,
    );
  }
  return lines.join('\n') + '\n';
}

/** containerd's hosts.toml for a registry reached over plain HTTP. */
function writePlainHttpHost(certsDir: string, host: string): void {
  const d = join(certsDir, host);
  mkdirSync(d, { recursive: true });
  const url = `http://${host}`;
  writeFileSync(
    join(d, 'hosts.toml'),
    [`server = ${q(url)}`, '', `[host.${q(url)}]`, '  capabilities = ["pull", "resolve", "push"]', ''].join(
      '\n',
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Processes

function runTool(
  cmd: string,
  args: readonly string[],
  timeoutMs: number,
  env?: NodeJS.ProcessEnv,
): Promise<CtrResult> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs, killSignal: 'SIGKILL', env },
      (err, stdout, stderr) => {
        if (err !== null && typeof err.code !== 'number') {
          if (err.killed === true) {
            reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${timeoutMs} ms: ${stderr}`));
          } else reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}`, { cause: err }));
          return;
        }
        resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
      },
    );
  });
}

/** The environment containerd and ctr run with: sbin dirs on PATH, no CONTAINERD_* from outside. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CONTAINERD_')) env[k] = v;
  env['PATH'] = [...new Set(SEARCH_PATH)].join(delimiter);
  return { ...env, ...extra };
}

/** A short temp dir: the socket path (plus `.ttrpc`) must fit the 108-byte unix path limit. */
function shortTempDir(): string {
  const base = join(tmpdir(), 'ctd-XXXXXX/c.sock.ttrpc').length < 90 ? tmpdir() : '/tmp';
  return mkdtempSync(join(base, 'ctd-'));
}

/**
 * Start containerd (see StartContainerdOptions) and wait until it answers (`ctr version`, and
 * with CRI also the CRI API). Stop it with `stop()`.
 */
export async function startContainerd(opts: StartContainerdOptions = {}): Promise<Containerd> {
  installExitHook();
  const dir = shortTempDir();
  const sock = join(dir, 'c.sock');
  const configPath = join(dir, 'config.toml');
  for (const d of ['root', 'state', 'opt', 'cni/bin', 'cni/conf', 'certs.d'])
    mkdirSync(join(dir, d), { recursive: true });
  for (const host of opts.cri?.plainHttpRegistries ?? []) writePlainHttpHost(join(dir, 'certs.d'), host);
  writeFileSync(configPath, configToml(dir, sock, opts));

  // ctr gets the same extra environment: it mounts rootfs itself (to read the image's users).
  const ctrEnv = childEnv(opts.env);
  const child = spawn(findBinary('containerd') ?? 'containerd', ['--config', configPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: childEnv(opts.env),
  });
  const handle: Live = { dir, sock, child };
  live.add(handle);
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    log += d;
    if (log.length > LOG_LIMIT * 2) log = log.slice(-LOG_LIMIT);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', (e) => (log += `\nspawn failed: ${String(e)}\n`));

  const ctr = async (args: readonly string[], o: CtrOptions = {}): Promise<CtrResult> => {
    const bin = o.remote === true ? 'ctr-remote' : 'ctr';
    return runTool(
      findBinary(bin) ?? bin,
      ['-a', sock, '-n', o.namespace ?? NAMESPACE, ...args],
      o.timeoutMs ?? 60_000,
      ctrEnv,
    );
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const shimsAtStop = shimsOf(sock);
    try {
      if (child.exitCode === null && child.signalCode === null)
        await removeEverything(ctr, sock, opts.cri !== undefined);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(killer);
      }
      // Shims exit by themselves once their task is deleted; what is left is killed.
      let deadline = Date.now() + 3000;
      while (shimsAtStop.some(pidAlive) && Date.now() < deadline) await sleep(50);
      const doomed = [...shimsAtStop, ...killShims(sock)];
      deadline = Date.now() + 5000;
      while (doomed.some(pidAlive) && Date.now() < deadline) await sleep(50);
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
      live.delete(handle);
    }
  };

  const harness: Containerd = {
    dir,
    sock,
    configPath,
    pid: child.pid ?? -1,
    namespace: NAMESPACE,
    ctr,
    contentDigests: async (namespace?: string): Promise<string[]> => {
      const namespaces = namespace !== undefined ? [namespace] : await listNamespaces(ctr);
      const all = new Set<string>();
      for (const ns of namespaces) {
        const r = await ctr(['content', 'ls', '-q'], { namespace: ns });
        if (r.code !== 0) throw new Error(`ctr content ls in ${ns} failed: ${r.stderr}`);
        for (const d of r.stdout.split('\n')) if (d.trim() !== '') all.add(d.trim());
      }
      return [...all].sort();
    },
    log: () => log,
    stop,
  };

  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `containerd exited at start (${child.exitCode ?? child.signalCode}): ${log.slice(-4000)}`,
        );
      const r = existsSync(sock)
        ? await ctr(['version'], { timeoutMs: 5000 }).catch(() => undefined)
        : undefined;
      if (r?.code === 0) break;
      if (Date.now() > deadline) throw new Error(`containerd did not answer on ${sock}: ${log.slice(-4000)}`);
      await sleep(50);
    }
    if (opts.cri !== undefined) await waitCri(sock, deadline, () => log);
  } catch (e) {
    await stop();
    throw e;
  }
  return harness;
}

/** The CRI plugin initializes after containerd serves; wait until its API answers. */
async function waitCri(sock: string, deadline: number, log: () => string): Promise<void> {
  const cri = criClient(sock);
  try {
    for (;;) {
      try {
        await cri.listContainers({}, 5000);
        return;
      } catch (e) {
        if (log().includes('failed to load plugin io.containerd.grpc.v1.cri'))
          throw new Error(`containerd's CRI plugin failed to load: ${log().slice(-4000)}`);
        if (Date.now() > deadline)
          throw new Error(`containerd's CRI API did not answer: ${String(e)}; ${log().slice(-4000)}`);
        await sleep(100);
      }
    }
  } finally {
    cri.close();
  }
}

async function listNamespaces(ctr: Containerd['ctr']): Promise<string[]> {
  const r = await ctr(['namespaces', 'ls', '-q']);
  if (r.code !== 0) throw new Error(`ctr namespaces ls failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function lines(s: string): string[] {
  return s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/**
 * Take down what tests made, through the APIs (so runc state, cgroups and rootfs mounts go
 * too): CRI pods first (they own their containers), then every task and container of every
 * namespace. Best effort: what fails here is caught by the shim kill and unmount that follow.
 */
async function removeEverything(ctr: Containerd['ctr'], sock: string, withCri: boolean): Promise<void> {
  if (withCri) {
    const cri = criClient(sock);
    try {
      for (const pod of await cri.listPodSandbox(10_000)) {
        await cri.stopPodSandbox(pod.id).catch(() => undefined);
        await cri.removePodSandbox(pod.id).catch(() => undefined);
      }
    } catch {
      // fall through to the ctr level
    } finally {
      cri.close();
    }
  }
  let namespaces: string[];
  try {
    namespaces = await listNamespaces(ctr);
  } catch {
    return;
  }
  for (const ns of namespaces) {
    const tasks = await ctr(['tasks', 'ls', '-q'], { namespace: ns, timeoutMs: 15_000 }).catch(
      () => undefined,
    );
    for (const id of lines(tasks?.stdout ?? '')) {
      await ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id], { namespace: ns, timeoutMs: 15_000 }).catch(
        () => undefined,
      );
      await ctr(['tasks', 'delete', '-f', id], { namespace: ns, timeoutMs: 15_000 }).catch(() => undefined);
    }
    const containers = await ctr(['containers', 'ls', '-q'], { namespace: ns, timeoutMs: 15_000 }).catch(
      () => undefined,
    );
    const ids = lines(containers?.stdout ?? '');
    if (ids.length > 0)
      await ctr(['containers', 'delete', ...ids], { namespace: ns, timeoutMs: 30_000 }).catch(
        () => undefined,
      );
  }
}

// ---------------------------------------------------------------------------------------------
// The pause image

/** The sandbox's only process: sleeps until SIGTERM or SIGINT (SIGKILL needs no help). */
const PAUSE_SCRIPT =
  "trap 'kill $p 2>/dev/null; exit 0' TERM INT; while :; do sleep 3600 & p=$!; wait $p; done";

async function umoci(args: readonly string[]): Promise<void> {
  const r = await runTool(findBinary('umoci') ?? 'umoci', args, 60_000);
  if (r.code !== 0) throw new Error(`umoci ${args.join(' ')} failed: ${r.stderr.trim()}`);
}

let pauseLayout: Promise<OciLayout> | undefined;

/**
 * A pause image for CRI sandboxes, made without network: the busybox-static image (see
 * makeBusyboxLayout) whose entrypoint is a shell that sleeps until it gets SIGTERM or SIGINT and
 * then exits 0. Tag `latest`. Without `dir` the layout is made once per process.
 */
export function makePauseLayout(dir?: string): Promise<OciLayout> {
  const make = async (): Promise<OciLayout> => {
    const layout = await makeBusyboxLayout(dir ?? join(processTempDir('pause'), 'layout'));
    const image = `${layout.dir}:${layout.tag}`;
    await umoci([
      'config',
      '--image',
      image,
      '--config.entrypoint',
      '/bin/sh',
      '--config.entrypoint',
      '-c',
      '--config.entrypoint',
      PAUSE_SCRIPT,
      '--clear=config.cmd',
    ]);
    await umoci(['gc', '--layout', layout.dir]);
    return layout;
  };
  if (dir !== undefined) return make();
  pauseLayout ??= make();
  pauseLayout.catch(() => (pauseLayout = undefined));
  return pauseLayout;
}

/** Push the pause image (makePauseLayout) to `registryHost/repoAndTag` (default `pause:latest`). */
export async function pushPauseImage(
  registryHost: string,
  repoAndTag = 'pause:latest',
  opts: PushOptions = {},
): Promise<PushedImage> {
  const layout = await makePauseLayout();
  return pushLayout(layout.dir, layout.tag, registryHost, repoAndTag, opts);
}
