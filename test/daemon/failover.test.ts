import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { mountAt } from '../../src/fuse/session.js';
import { createLogger } from '../../src/log/logger.js';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { curl, localfsConfigText } from '../helpers/api.js';
import { canFuse, createImage, mounted, startDaemon, tmp, WAIT_MS, type Daemon } from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { binPath, runBin } from '../helpers/run-bin.js';

/**
 * nydusd failover and hot upgrade with a real kernel FUSE connection: the supervisor (here the
 * test process, in production the snapshotter) keeps the state and a dup of /dev/fuse while
 * nydusd is killed with SIGKILL or replaced; a reader reading the mount the whole time never
 * sees an error, and the mount stays the same FUSE connection.
 */

/** A bound for Promise.race that does not keep the process alive once the race is over. */
function idle(ms: number): Promise<void> {
  return sleep(ms, undefined, { ref: false });
}

const log = createLogger(process.env['NYDUS_TEST_DEBUG'] === '1' ? 'debug' : 'off');

/** A tree of a few files with seeded contents (some bigger than a chunk). */
function makeTree(dir: string, seed: number): void {
  const rnd = prng(seed);
  mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
  for (let i = 0; i < 12; i++) {
    const size = i % 4 === 0 ? 1_500_000 + Math.floor(rnd() * 500_000) : Math.floor(rnd() * 300_000);
    const buf = Buffer.alloc(size);
    for (let k = 0; k < size; k++) buf[k] = Math.floor(rnd() * 256);
    const where =
      i % 3 === 0
        ? join(dir, `f${i}`)
        : i % 3 === 1
          ? join(dir, 'sub', `g${i}`)
          : join(dir, 'sub', 'deeper', `h${i}`);
    writeFileSync(where, buf);
  }
}

/** `md5sum` lines of every file under `dir`, paths relative to it ("./x"). */
function md5List(dir: string): string {
  const r = spawnSync('sh', ['-c', 'find . -type f | sort | xargs md5sum'], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

interface Proc {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Start nydusd without waiting for a mount (an --upgrade daemon mounts nothing). */
function spawnNydusd(mnt: string, args: string[]): Proc {
  const child = spawn(process.execPath, [binPath('nydusd'), ...args, '--mountpoint', mnt], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return { child, stderr: () => stderr, exited };
}

/** Poll GET /api/v1/daemon until its state is `state` (bounded). */
async function waitState(sock: string, state: string, p: Proc | Daemon): Promise<Record<string, unknown>> {
  const deadline = Date.now() + WAIT_MS;
  let last = '';
  for (;;) {
    if (p.child.exitCode !== null) throw new Error(`nydusd exited with ${p.child.exitCode}: ${p.stderr()}`);
    if (existsSync(sock)) {
      try {
        const r = await curl(sock, 'GET', '/api/v1/daemon');
        const info = r.json as Record<string, unknown> | undefined;
        last = r.body;
        if (info?.['state'] === state) return info;
      } catch (e) {
        last = String(e);
      }
    }
    if (Date.now() > deadline)
      throw new Error(`nydusd did not reach ${state} within ${WAIT_MS} ms (${last}): ${p.stderr()}`);
    await sleep(50);
  }
}

async function put(sock: string, path: string, status = 204): Promise<void> {
  const r = await curl(sock, 'PUT', path);
  assert.equal(r.status, status, `PUT ${path}: ${r.body}`);
}

/**
 * A reader in its own process: over and over, drop the page cache of every file (so each
 * pass reads through nydusd again) and check every md5; exits 1 at the first error or
 * mismatch, 0 once the stop file exists. Its pass count is in `count`.
 */
class Reader {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  #err = '';

  constructor(
    readonly dir: string,
    cwd: string,
    sums: string,
  ) {
    writeFileSync(join(dir, 'expected.md5'), sums);
    const script = `
      n=0
      while [ ! -e "$STOP" ]; do
        for f in $(cut -c35- "$SUMS"); do dd if="$f" iflag=nocache count=0 status=none || exit 1; done
        md5sum -c --quiet "$SUMS" || { echo "pass $n failed" >&2; exit 1; }
        n=$((n+1)); echo $n > "$COUNT"
      done`;
    this.child = spawn('sh', ['-c', script], {
      cwd,
      env: {
        ...process.env,
        STOP: join(dir, 'stop'),
        SUMS: join(dir, 'expected.md5'),
        COUNT: join(dir, 'count'),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.#err += d));
    this.exited = new Promise((resolve) => this.child.on('exit', (c) => resolve(c)));
  }

  get stderr(): string {
    return this.#err;
  }

  get passes(): number {
    try {
      return Number(readFileSync(join(this.dir, 'count'), 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  }

  /** Wait until `n` more passes are done (bounded). */
  async more(n: number): Promise<void> {
    const target = this.passes + n;
    const deadline = Date.now() + WAIT_MS * 2;
    while (this.passes < target) {
      if (this.child.exitCode !== null)
        throw new Error(`the reader failed (${this.child.exitCode}): ${this.#err}`);
      if (Date.now() > deadline)
        throw new Error(`the reader made no progress (${this.passes} passes): ${this.#err}`);
      await sleep(20);
    }
  }

  /** Let it finish its pass and exit; its exit code. */
  async stop(): Promise<number | null> {
    writeFileSync(join(this.dir, 'stop'), '');
    return Promise.race([this.exited, idle(WAIT_MS * 2).then(() => 'hung' as unknown as null)]);
  }
}

/** The mount's identity in mountinfo: mount id and device (the FUSE connection). */
function mountIdentity(mnt: string): string {
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .reverse()
    .find((l) => l.split(' ')[4] === mnt);
  assert.ok(line !== undefined, `${mnt} is mounted`);
  const f = line.split(' ');
  return `${f[0]} ${f[2]} ${f[f.indexOf('-') + 1]}`;
}

/** Never leave a process, a mount or a held connection behind. */
function cleanUp(mnt: string, procs: (ChildProcess | undefined)[], sup: Supervisor | undefined): void {
  for (const p of procs)
    if (p !== undefined && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  const m = mounted(mnt) ? mountAt(mnt) : undefined;
  sup?.close();
  if (m !== undefined) {
    try {
      writeFileSync(`/sys/fs/fuse/connections/${m.minor}/abort`, '1');
    } catch {
      // fusectl not mounted
    }
  }
  if (mounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: WAIT_MS });
}

interface Image {
  src: string;
  boot: string;
  blobs: string;
}

async function image(dir: string, name: string, seed: number): Promise<Image> {
  const src = join(dir, `${name}-src`);
  const blobs = join(dir, 'blobs');
  mkdirSync(src, { recursive: true });
  mkdirSync(blobs, { recursive: true });
  makeTree(src, seed);
  const boot = join(dir, `${name}.boot`);
  await createImage(src, boot, blobs, ['--chunk-size', '0x100000']);
  return { src, boot, blobs };
}

test('failover: SIGKILL nydusd under a reader, a new nydusd (--upgrade, then crash detection) takes the connection over from the supervisor; the reader sees no error', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const supSock = join(dir, 'sup.sock');
  const sup = new Supervisor(supSock, log);
  let d1: Daemon | undefined;
  let d2: Proc | undefined;
  let d3: Proc | undefined;
  let reader: Reader | undefined;
  try {
    const img = await image(dir, 'img', 1);
    const args = [
      '--apisock',
      sock,
      '--supervisor',
      supSock,
      '--id',
      'daemon-1',
      '-B',
      img.boot,
      '-D',
      img.blobs,
      '--log-level',
      'debug',
    ];
    d1 = await startDaemon(mnt, args);
    const info = await waitState(sock, 'RUNNING', d1);
    assert.equal(info['id'], 'daemon-1');
    assert.equal(info['supervisor'], supSock);
    const identity = mountIdentity(mnt);

    // The snapshotter's order: listen, ask nydusd to send, await.
    const receiving = sup.waitStates(WAIT_MS);
    await put(sock, '/api/v1/daemon/fuse/sendfd');
    await receiving;
    assert.equal(sup.hasStates(), true);

    reader = new Reader(dir, mnt, md5List(img.src));
    await reader.more(2);

    // Crash.
    d1.child.kill('SIGKILL');
    await d1.exited;
    assert.equal(mounted(mnt), true, 'the mount stays while the supervisor holds the connection');
    assert.equal(existsSync(sock), true, 'a crashed daemon leaves its API socket file');

    // A new nydusd in upgrade mode takes over: listen, start it, wait for INIT, takeover, start.
    const sending = sup.sendStates(WAIT_MS);
    d2 = spawnNydusd(mnt, [...args, '--upgrade']);
    await waitState(sock, 'INIT', d2);
    await put(sock, '/api/v1/daemon/fuse/takeover');
    await sending;
    const ready = await waitState(sock, 'READY', d2);
    assert.deepEqual(Object.keys(ready['backend_collection'] as object), ['/']);
    await put(sock, '/api/v1/daemon/start');
    await waitState(sock, 'RUNNING', d2);
    await reader.more(3);
    assert.equal(mountIdentity(mnt), identity, 'the same FUSE mount and connection');

    // The new daemon refreshes the supervisor's states; then it crashes too, and a nydusd
    // started as usual (no --upgrade) finds the mount and the dead socket and waits for a
    // takeover by itself.
    const again = sup.waitStates(WAIT_MS);
    await put(sock, '/api/v1/daemon/fuse/sendfd');
    await again;
    d2.child.kill('SIGKILL');
    await d2.exited;
    const sending2 = sup.sendStates(WAIT_MS);
    d3 = spawnNydusd(mnt, args);
    await waitState(sock, 'INIT', d3);
    await put(sock, '/api/v1/daemon/fuse/takeover');
    await sending2;
    await put(sock, '/api/v1/daemon/start');
    await waitState(sock, 'RUNNING', d3);
    await reader.more(3);
    assert.match(d3.stderr(), /previous nydusd crashed; waiting for a takeover/);

    assert.equal(await reader.stop(), 0, `the reader saw no error: ${reader.stderr}`);
    assert.equal(mountIdentity(mnt), identity);
    assert.equal(md5List(mnt), md5List(img.src));
    if (/was resent by the kernel/.test(d2.stderr() + d3.stderr()))
      t.diagnostic('requests left by a killed daemon were resent to its successor');

    // SIGTERM on the last daemon unmounts, as usual.
    d3.child.kill('SIGTERM');
    assert.equal(await Promise.race([d3.exited, idle(WAIT_MS).then(() => 'hung')]), 0, d3.stderr());
    assert.equal(mounted(mnt), false);
  } finally {
    cleanUp(mnt, [reader?.child, d1?.child, d2?.child, d3?.child], sup);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hot upgrade: a new nydusd takes over while the old one serves, the old one exits through the API without unmounting, the new one starts', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock1 = join(dir, 'api.sock');
  const sock2 = join(dir, 'api1.sock');
  const supSock = join(dir, 'sup.sock');
  const sup = new Supervisor(supSock, log);
  let d1: Daemon | undefined;
  let d2: Proc | undefined;
  let reader: Reader | undefined;
  try {
    const img = await image(dir, 'img', 2);
    const common = ['--supervisor', supSock, '--id', 'daemon-1', '-B', img.boot, '-D', img.blobs];
    d1 = await startDaemon(mnt, ['--apisock', sock1, ...common]);
    await waitState(sock1, 'RUNNING', d1);
    const identity = mountIdentity(mnt);
    const receiving = sup.waitStates(WAIT_MS);
    await put(sock1, '/api/v1/daemon/fuse/sendfd');
    await receiving;
    reader = new Reader(dir, mnt, md5List(img.src));
    await reader.more(2);

    // The snapshotter's upgrade: the new binary on the next socket name, with --upgrade.
    const sending = sup.sendStates(WAIT_MS);
    d2 = spawnNydusd(mnt, ['--apisock', sock2, ...common, '--upgrade']);
    await waitState(sock2, 'INIT', d2);
    await put(sock2, '/api/v1/daemon/fuse/takeover');
    await sending;
    await waitState(sock2, 'READY', d2);
    await reader.more(1);

    // The old daemon leaves without unmounting; the reader waits meanwhile.
    await put(sock1, '/api/v1/daemon/exit');
    assert.equal(await Promise.race([d1.exited, idle(WAIT_MS).then(() => 'hung')]), 0, d1.stderr());
    assert.equal(mounted(mnt), true, 'exit after handing the fd over leaves the mount');
    await put(sock2, '/api/v1/daemon/start');
    await waitState(sock2, 'RUNNING', d2);
    await reader.more(3);
    assert.equal(await reader.stop(), 0, `the reader saw no error: ${reader.stderr}`);
    assert.equal(mountIdentity(mnt), identity);
    assert.equal(md5List(mnt), md5List(img.src));

    // A takeover of a running daemon is refused.
    const r = await curl(sock2, 'PUT', '/api/v1/daemon/fuse/takeover');
    assert.equal(r.status, 400, r.body);
    assert.match(r.body, /Unexpected event Takeover in state RUNNING/);

    d2.child.kill('SIGTERM');
    assert.equal(await Promise.race([d2.exited, idle(WAIT_MS).then(() => 'hung')]), 0, d2.stderr());
    assert.equal(mounted(mnt), false);
  } finally {
    cleanUp(mnt, [reader?.child, d1?.child, d2?.child], sup);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('failover of a shared daemon: API-mounted images at /a and /b/c keep their slots and node ids, a reader with its cwd in the pseudo dir /b sees no error', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const supSock = join(dir, 'sup.sock');
  const sup = new Supervisor(supSock, log);
  let d1: Daemon | undefined;
  let d2: Proc | undefined;
  let reader: Reader | undefined;
  try {
    const a = await image(dir, 'a', 3);
    const c = await image(dir, 'c', 4);
    const args = ['--apisock', sock, '--supervisor', supSock, '--id', 'shared', '--log-level', 'debug'];
    d1 = await startDaemon(mnt, args);
    await waitState(sock, 'RUNNING', d1);
    const body = (img: Image): string =>
      JSON.stringify({ source: img.boot, fs_type: 'rafs', config: localfsConfigText(img.blobs) });
    const mount = async (sockPath: string, mp: string, img: Image): Promise<void> => {
      const r = await curl(sockPath, 'POST', `/api/v1/mount?mountpoint=${mp}`, body(img));
      assert.equal(r.status, 204, r.body);
    };
    // A mount that goes away first: the others get slots and pseudo ids a fresh daemon would not.
    await mount(sock, '/x/y', a);
    await mount(sock, '/a', a);
    assert.equal((await curl(sock, 'DELETE', '/api/v1/mount?mountpoint=/x/y')).status, 204);
    await mount(sock, '/b/c', c);

    const receiving = sup.waitStates(WAIT_MS);
    await put(sock, '/api/v1/daemon/fuse/sendfd');
    await receiving;

    // One reader reads both images; its cwd is the pseudo directory /b.
    const sums = md5List(a.src).replace(/\.\//g, '../a/') + md5List(c.src).replace(/\.\//g, 'c/');
    reader = new Reader(dir, join(mnt, 'b'), sums);
    await reader.more(2);

    d1.child.kill('SIGKILL');
    await d1.exited;
    const sending = sup.sendStates(WAIT_MS);
    d2 = spawnNydusd(mnt, [...args, '--upgrade']);
    await waitState(sock, 'INIT', d2);
    await put(sock, '/api/v1/daemon/fuse/takeover');
    await sending;
    const info = await waitState(sock, 'READY', d2);
    assert.deepEqual(Object.keys(info['backend_collection'] as object).sort(), ['/a', '/b/c']);
    await put(sock, '/api/v1/daemon/start');
    await waitState(sock, 'RUNNING', d2);
    await reader.more(3);
    assert.equal(await reader.stop(), 0, `the reader saw no error: ${reader.stderr}`);

    // The restored tree works on: list it, umount one image, mount another.
    const ls = spawnSync('ls', [join(mnt, 'b')], { encoding: 'utf8', timeout: WAIT_MS });
    assert.equal(ls.stdout.trim(), 'c');
    assert.equal((await curl(sock, 'DELETE', '/api/v1/mount?mountpoint=/a')).status, 204);
    assert.equal(existsSync(join(mnt, 'a')), false);
    await mount(sock, '/d', a);
    assert.equal(md5List(join(mnt, 'd')), md5List(a.src));
    assert.equal(md5List(join(mnt, 'b', 'c')), md5List(c.src));

    d2.child.kill('SIGTERM');
    assert.equal(await Promise.race([d2.exited, idle(WAIT_MS).then(() => 'hung')]), 0, d2.stderr());
    assert.equal(mounted(mnt), false);
  } finally {
    cleanUp(mnt, [reader?.child, d1?.child, d2?.child], sup);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('failover errors are clear and nothing waits unbounded', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const supSock = join(dir, 'sup.sock');
  const sup = new Supervisor(supSock, log);
  let d1: Daemon | undefined;
  let d2: Proc | undefined;
  try {
    // --id and --supervisor need each other; --upgrade needs the API.
    for (const args of [
      ['--id', 'x'],
      ['--supervisor', supSock],
    ]) {
      const r = await runBin('nydusd', [...args, '--mountpoint', mnt], { timeoutMs: WAIT_MS });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--id and --supervisor must be given together/);
    }
    const up = await runBin('nydusd', ['--upgrade', '--mountpoint', mnt], { timeoutMs: WAIT_MS });
    assert.equal(up.code, 1, up.stderr);
    assert.match(up.stderr, /--upgrade needs --apisock/);

    const img = await image(dir, 'img', 5);
    // Without a supervisor there is nobody to send to.
    d1 = await startDaemon(mnt, ['--apisock', sock, '-B', img.boot, '-D', img.blobs]);
    await waitState(sock, 'RUNNING', d1);
    let r = await curl(sock, 'PUT', '/api/v1/daemon/fuse/sendfd');
    assert.equal(r.status, 501, r.body);
    assert.match(r.body, /started without --supervisor/);
    r = await curl(sock, 'PUT', '/api/v1/daemon/start');
    assert.equal(r.status, 400, r.body);
    d1.child.kill('SIGTERM');
    assert.equal(await d1.exited, 0);

    // A supervisor path nobody listens on: sendfd fails at once.
    d1 = await startDaemon(mnt, [
      '--apisock',
      sock,
      '--supervisor',
      supSock,
      '--id',
      'e',
      '-B',
      img.boot,
      '-D',
      img.blobs,
    ]);
    await waitState(sock, 'RUNNING', d1);
    const t0 = Date.now();
    r = await curl(sock, 'PUT', '/api/v1/daemon/fuse/sendfd');
    assert.equal(r.status, 500, r.body);
    assert.match(r.body, /Cannot send the state to supervisor .*sup\.sock.*no such socket/);
    assert.ok(Date.now() - t0 < 5000);
    // Exit without having handed the fd to anyone unmounts, as before.
    await put(sock, '/api/v1/daemon/exit');
    assert.equal(await Promise.race([d1.exited, idle(WAIT_MS).then(() => 'hung')]), 0, d1.stderr());
    assert.equal(mounted(mnt), false);

    // An upgrade daemon: takeover with nobody listening, or a supervisor without states.
    d2 = spawnNydusd(mnt, ['--apisock', sock, '--supervisor', supSock, '--id', 'e', '--upgrade']);
    await waitState(sock, 'INIT', d2);
    r = await curl(sock, 'PUT', '/api/v1/daemon/fuse/takeover');
    assert.equal(r.status, 500, r.body);
    assert.match(r.body, /Cannot take the state over from supervisor .*sup\.sock/);
    await assert.rejects(sup.sendStates(1000), /has no states to send/);
    r = await curl(sock, 'PUT', '/api/v1/daemon/start');
    assert.equal(r.status, 400, r.body);
    assert.match(r.body, /Unexpected event Start in state INIT/);
    r = await curl(
      sock,
      'POST',
      '/api/v1/mount?mountpoint=/a',
      JSON.stringify({ source: img.boot, fs_type: 'rafs', config: localfsConfigText(img.blobs) }),
    );
    assert.equal(r.status, 503, r.body);
    r = await curl(sock, 'PUT', '/api/v1/daemon/fuse/sendfd');
    assert.equal(r.status, 503, r.body);
    // A state for another mountpoint (nothing is mounted here) is refused, the daemon stays INIT.
    const other = tmp();
    let d3: Daemon | undefined;
    try {
      const otherSock = join(other.dir, 'api.sock');
      d3 = await startDaemon(other.mnt, [
        '--apisock',
        otherSock,
        '--supervisor',
        supSock,
        '--id',
        'o',
        '-B',
        img.boot,
        '-D',
        img.blobs,
      ]);
      await waitState(otherSock, 'RUNNING', d3);
      const receiving = sup.waitStates(WAIT_MS);
      await put(otherSock, '/api/v1/daemon/fuse/sendfd');
      await receiving;
      const sending = sup.sendStates(WAIT_MS);
      r = await curl(sock, 'PUT', '/api/v1/daemon/fuse/takeover');
      await sending;
      assert.equal(r.status, 500, r.body);
      assert.match(r.body, /The state is for mountpoint .*, this daemon serves/);
      await waitState(sock, 'INIT', d2);
      d3.child.kill('SIGTERM');
      assert.equal(await d3.exited, 0);
    } finally {
      cleanUp(other.mnt, [d3?.child], undefined);
      rmSync(other.dir, { recursive: true, force: true });
    }
    // Exit in INIT: nothing to unmount.
    await put(sock, '/api/v1/daemon/exit');
    assert.equal(await Promise.race([d2.exited, idle(WAIT_MS).then(() => 'hung')]), 0, d2.stderr());
  } finally {
    cleanUp(mnt, [d1?.child, d2?.child], sup);
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A registry that serves ranged blob GETs from a directory and can hold them: closed, a request
 * waits until the gate opens (or its client goes away). Held requests are counted.
 */
class GatedRegistry {
  readonly server: Server;
  #open = true;
  #waiters: (() => void)[] = [];
  held = 0;
  host = '';

  constructor(readonly blobDir: string) {
    this.server = createServer((req, res) => {
      const m = /^\/v2\/.+\/blobs\/sha256:([0-9a-f]{64})$/.exec(req.url ?? '');
      const file = m === null ? undefined : join(this.blobDir, m[1]!);
      if (file === undefined || !existsSync(file)) {
        res.statusCode = m === null && req.url === '/v2/' ? 200 : 404;
        res.end();
        return;
      }
      const serve = (): void => {
        const data = readFileSync(file);
        const r = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
        const start = r === null ? 0 : Number(r[1]);
        const end = r === null ? data.length - 1 : Math.min(Number(r[2]), data.length - 1);
        res.statusCode = r === null ? 200 : 206;
        if (r !== null) res.setHeader('content-range', `bytes ${start}-${end}/${data.length}`);
        res.setHeader('content-length', end + 1 - start);
        res.end(req.method === 'HEAD' ? undefined : data.subarray(start, end + 1));
      };
      if (this.#open || req.method === 'HEAD') serve();
      else {
        this.held++;
        this.#waiters.push(serve);
      }
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): void {
    this.#open = false;
  }

  open(): void {
    this.#open = true;
    for (const w of this.#waiters.splice(0)) w();
  }

  async stop(): Promise<void> {
    this.open();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** md5 of a file read in a child process (which blocks while nobody serves the mount). */
function md5InChild(path: string): { child: ChildProcess; result: Promise<string> } {
  const child = spawn('md5sum', [path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const result = new Promise<string>((resolve, reject) =>
    child.on('exit', (c) =>
      c === 0 ? resolve(out.slice(0, 32)) : reject(new Error(`md5sum exited ${c}: ${err}`)),
    ),
  );
  result.catch(() => undefined);
  return { child, result };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${WAIT_MS} ms`);
    await sleep(20);
  }
}

test('resend: a read the killed nydusd had taken from the kernel is resent to its successor (FUSE_NOTIFY_RESEND); with --failover-policy none it is never answered', async (t) => {
  if (!canFuse(t)) return;
  const { dir, mnt } = tmp();
  const sock = join(dir, 'api.sock');
  const supSock = join(dir, 'sup.sock');
  const sup = new Supervisor(supSock, log);
  const src = join(dir, 'src');
  const blobs = join(dir, 'blobs');
  mkdirSync(src);
  mkdirSync(blobs);
  const rnd = prng(7);
  for (const name of ['one', 'two']) {
    const big = Buffer.alloc(3 * 1024 * 1024 + 99);
    for (let i = 0; i < big.length; i++) big[i] = Math.floor(rnd() * 256);
    writeFileSync(join(src, name), big);
  }
  const md5 = (p: string): string => createHash('md5').update(readFileSync(p)).digest('hex');
  const boot = join(dir, 'img.boot');
  await createImage(src, boot, blobs, ['--chunk-size', '0x100000']);
  assert.equal(readdirSync(blobs).length, 1);
  const reg = new GatedRegistry(blobs);
  await reg.start();
  const config = join(dir, 'registry.json');
  writeFileSync(
    config,
    JSON.stringify({
      device: {
        backend: {
          type: 'registry',
          config: { scheme: 'http', host: reg.host, repo: 'failover/img', timeout: 30 },
        },
      },
      mode: 'direct',
    }),
  );
  const args = [
    '--apisock',
    sock,
    '--supervisor',
    supSock,
    '--id',
    'r',
    '-C',
    config,
    '-B',
    boot,
    '--log-level',
    'debug',
  ];
  const procs: (ChildProcess | undefined)[] = [];
  const takeOver = async (extra: string[]): Promise<Proc> => {
    const sending = sup.sendStates(WAIT_MS);
    const d = spawnNydusd(mnt, [...args, '--upgrade', ...extra]);
    procs.push(d.child);
    await waitState(sock, 'INIT', d);
    await put(sock, '/api/v1/daemon/fuse/takeover');
    await sending;
    await put(sock, '/api/v1/daemon/start');
    await waitState(sock, 'RUNNING', d);
    return d;
  };
  const sendStates = async (): Promise<void> => {
    const receiving = sup.waitStates(WAIT_MS);
    await put(sock, '/api/v1/daemon/fuse/sendfd');
    await receiving;
  };
  try {
    const d1 = await startDaemon(mnt, args);
    procs.push(d1.child);
    await waitState(sock, 'RUNNING', d1);
    await sendStates();

    // The daemon takes a READ and waits for the backend; then it is killed.
    reg.close();
    const r1 = md5InChild(join(mnt, 'one'));
    procs.push(r1.child);
    await until('a held backend request', () => reg.held > 0);
    d1.child.kill('SIGKILL');
    await d1.exited;
    reg.open();
    const d2 = await takeOver([]);
    const got1 = await r1.result.catch((e: unknown) => {
      throw new Error(`${String(e)}\n--- d1:\n${d1.stderr()}\n--- d2:\n${d2.stderr()}`);
    });
    assert.equal(got1, md5(join(src, 'one')));
    assert.match(d2.stderr(), /FUSE read \(unique \d+\) was resent by the kernel/);
    assert.match(d2.stderr(), /asked the kernel to resend/);

    // The same crash with the policy none: the held read stays unanswered.
    await sendStates();
    reg.close();
    const held = reg.held;
    const r2 = md5InChild(join(mnt, 'two'));
    procs.push(r2.child);
    await until('a held backend request', () => reg.held > held);
    d2.child.kill('SIGKILL');
    await d2.exited;
    reg.open();
    const d3 = await takeOver(['--failover-policy', 'none']);
    await sleep(1500);
    assert.equal(r2.child.exitCode, null, 'the read the dead daemon had taken is still waiting');
    assert.doesNotMatch(d3.stderr(), /resent by the kernel/);
    // Other reads are served.
    assert.equal(await md5InChild(join(mnt, 'one')).result, md5(join(src, 'one')));
    r2.child.kill('SIGKILL');
    d3.child.kill('SIGTERM');
    const code = await Promise.race([d3.exited, idle(WAIT_MS).then(() => 'hung')]);
    assert.equal(code, 0, d3.stderr());
  } finally {
    cleanUp(mnt, procs, sup);
    await reg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
