import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, fstatSync, mkdtempSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NydusError } from '../../src/errors/errors.js';
import { silentLogger } from '../../src/log/logger.js';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import { closeFd, UnixConnection, UnixListener } from '../../src/util/fdpass.js';
import { PROJECT_ROOT } from '../helpers/fixtures.js';

/**
 * The supervisor and the fd passing under it: a pipe's fd goes from one process to the
 * supervisor and on to another process, which reads what the first wrote; every wait for a
 * peer ends at its bound with a clear error.
 */

const FDPASS = join(PROJECT_ROOT, 'dist', 'src', 'util', 'fdpass.js');

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'supervisor-'));
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a shell command line whose node parts import fdpass; bounded. */
function run(cmd: string, env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', cmd], { env: { ...process.env, ...env, FDPASS } });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** "nydusd" sending its state with its stdin (the read end of a shell pipe) attached. */
const SENDER = `
const { UnixConnection } = await import(process.env.FDPASS);
const c = await UnixConnection.connect(process.env.SOCK, 5000);
const { readFileSync } = await import('node:fs');
await c.send(readFileSync(process.env.STATE), [0], 5000);
c.close();
`;

/** A new "nydusd" fetching the state and reading the pipe through the fd it got. */
const RECEIVER = `
const { readSync, fstatSync } = await import('node:fs');
const { UnixConnection } = await import(process.env.FDPASS);
const c = await UnixConnection.connect(process.env.SOCK, 5000);
const got = await c.receiveAll(5000);
c.close();
const buf = Buffer.alloc(100);
const n = readSync(got.fds[0], buf, 0, 100, null);
process.stdout.write(JSON.stringify({
  state: got.data.toString(),
  fds: got.fds.length,
  fifo: fstatSync(got.fds[0]).isFIFO(),
  text: buf.subarray(0, n).toString(),
}));
`;

test('a pipe fd travels from one process through the supervisor to another, with the state', async () => {
  const dir = tempDir();
  const sock = join(dir, 'sup.sock');
  const sup = new Supervisor(sock, silentLogger);
  try {
    writeFileSync(join(dir, 'send.mjs'), SENDER);
    writeFileSync(join(dir, 'recv.mjs'), RECEIVER);
    // A big state: more than one sendmsg and one recvmsg (256 KiB) are needed.
    const state = `state:${'x'.repeat(600_000)}:end`;

    // Listen first, then let "nydusd" connect (the order of PUT .../sendfd), then await.
    writeFileSync(join(dir, 'state'), state);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    let sent: Run;
    try {
      const waiting = sup.waitStates(10_000);
      waiting.catch(() => undefined);
      sent = await run(`echo hello-through-the-pipe | node "${join(dir, 'send.mjs')}"`, {
        SOCK: sock,
        STATE: join(dir, 'state'),
      });
      await waiting;
    } finally {
      clearInterval(ticker);
    }
    assert.equal(sent.code, 0, sent.stderr);
    assert.ok(ticks > 0, 'the event loop kept running while the supervisor waited');
    assert.equal(sup.hasStates(), true);
    assert.equal(sup.stateSize, state.length);
    assert.equal(existsSync(sock), false, 'the socket file goes once the transfer is done');

    // The sender is gone; the supervisor's fd keeps the pipe and its bytes alive.
    const sending = sup.sendStates(10_000);
    sending.catch(() => undefined);
    const got = await run(`node "${join(dir, 'recv.mjs')}"`, { SOCK: sock });
    await sending;
    assert.equal(got.code, 0, got.stderr);
    const out = JSON.parse(got.stdout) as { state: string; fds: number; fifo: boolean; text: string };
    assert.equal(out.state, state);
    assert.equal(out.fds, 1);
    assert.equal(out.fifo, true);
    assert.equal(out.text, 'hello-through-the-pipe\n');
    // The states are kept for another takeover.
    assert.equal(sup.hasStates(), true);
  } finally {
    sup.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('in one process: connect, send with fds, receive them; new states replace old ones and close their fds', async () => {
  const dir = tempDir();
  const sock = join(dir, 's.sock');
  const sup = new Supervisor(sock, silentLogger);
  try {
    const file = join(dir, 'f');
    writeFileSync(file, 'abc');
    for (const round of [1, 2]) {
      const waiting = sup.waitStates(5000);
      const c = await UnixConnection.connect(sock, 5000);
      const { openSync } = await import('node:fs');
      const fd = openSync(file, 'r');
      await c.send(Buffer.from(`round ${round}`), [fd], 5000);
      c.close();
      closeFd(fd);
      await waiting;
    }
    assert.equal(sup.stateSize, 'round 2'.length);
    const sending = sup.sendStates(5000);
    const c = await UnixConnection.connect(sock, 5000);
    const got = await c.receiveAll(5000);
    c.close();
    await sending;
    assert.equal(got.data.toString(), 'round 2');
    assert.equal(got.fds.length, 1);
    const buf = Buffer.alloc(3);
    assert.equal(readSync(got.fds[0]!, buf, 0, 3, 0), 3);
    assert.equal(buf.toString(), 'abc');
    assert.equal(fstatSync(got.fds[0]!).isFile(), true);
    closeFd(got.fds[0]!);
  } finally {
    sup.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every wait is bounded and fails with a clear error', async () => {
  const dir = tempDir();
  const sock = join(dir, 'sup.sock');
  const sup = new Supervisor(sock, silentLogger);
  try {
    // Nobody sends states.
    const t0 = Date.now();
    await assert.rejects(sup.waitStates(300), (e: unknown) => {
      assert.ok(e instanceof NydusError);
      assert.equal(e.code, 'ERR_TIMEOUT');
      assert.match(e.message, /no nydusd connected to send its states within 300 ms/);
      assert.match(e.message, /sup\.sock/);
      return true;
    });
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(existsSync(sock), false);

    // No states to send.
    await assert.rejects(sup.sendStates(300), (e: unknown) => {
      assert.ok(e instanceof NydusError);
      assert.equal(e.code, 'ERR_FAILED_PRECONDITION');
      assert.match(e.message, /has no states to send/);
      return true;
    });

    // A peer that connects and sends no fd.
    const waiting = sup.waitStates(5000);
    const c = await UnixConnection.connect(sock, 1000);
    await c.send(Buffer.from('no fd here'), [], 1000);
    c.close();
    await assert.rejects(waiting, /received 10 bytes of state but no file descriptor/);
    assert.equal(sup.hasStates(), false);

    // A peer that connects and never finishes.
    const stuck = sup.waitStates(400);
    const c2 = await UnixConnection.connect(sock, 1000);
    await assert.rejects(stuck, (e: unknown) => {
      assert.ok(e instanceof NydusError);
      assert.equal(e.code, 'ERR_TIMEOUT');
      assert.match(e.message, /did not finish sending its states within 400 ms/);
      return true;
    });
    c2.close();

    // Connecting where nobody listens fails at once.
    await assert.rejects(
      UnixConnection.connect(sock, 1000),
      /Cannot connect to ".*sup\.sock": no such socket/,
    );
    // A receive that gets nothing ends at its bound.
    const l = UnixListener.listen(join(dir, 'l.sock'));
    const c3 = await UnixConnection.connect(join(dir, 'l.sock'), 1000);
    const peer = await l.accept(1000);
    await assert.rejects(
      c3.receiveAll(200),
      (e: unknown) => e instanceof NydusError && e.code === 'ERR_TIMEOUT',
    );
    peer.close();
    c3.close();
    l.close();
    assert.equal(existsSync(join(dir, 'l.sock')), false);

    // One transfer at a time; close() ends a wait at once.
    const first = sup.waitStates(10_000);
    await assert.rejects(sup.waitStates(100), /another transfer is in progress/);
    sup.close();
    await assert.rejects(first, /closed/);
    await assert.rejects(sup.waitStates(100), /is closed/);
  } finally {
    sup.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a path that is not a socket is refused, a stale socket replaced, a too long path refused', () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'plain');
    writeFileSync(file, '');
    assert.throws(() => UnixListener.listen(file), /exists and is not a socket/);
    const sockPath = join(dir, 'x.sock');
    const a = UnixListener.listen(sockPath);
    // Left behind as if its owner had crashed: the next listener takes the path.
    const b = UnixListener.listen(sockPath);
    a.close();
    assert.equal(existsSync(sockPath), true, 'closing the old listener leaves the new one its file');
    b.close();
    assert.equal(existsSync(sockPath), false);
    assert.throws(() => UnixListener.listen(join(dir, 'y'.repeat(120))), /must be 1 to 107 bytes/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
