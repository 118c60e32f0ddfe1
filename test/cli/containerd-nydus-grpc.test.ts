import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { binPath, runBin } from '../helpers/run-bin.js';

/**
 * `containerd-nydus-grpc` refuses bad input at start with one clear line and exit code 1 (2 for
 * an unknown flag), never a stack trace, and leaves no socket behind.
 */

function dir(t: { after: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'nsn-cli-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line of error, got:\n${stderr}`);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
  return lines[0]!;
}

test('--version prints the version', async () => {
  const r = await runBin('containerd-nydus-grpc', ['--version']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /containerd-nydus-grpc \(nydus-ts\)/);
});

test('a malformed TOML config, a wrong version and a wrong value are refused naming the key', async (t) => {
  const d = dir(t);
  const base = ['--root', join(d, 'r'), '--address', join(d, 's.sock'), '--log-to-stdout'];
  const cases: Array<[string, RegExp]> = [
    ['version = 1\n[daemon\n', /config.*line/i],
    ['version = 2\n', /version/],
    ['version = 1\n[daemon]\nrecover_policy = "sometimes"\n', /daemon\.recover_policy.*restart/],
    ['version = 1\ndaemon_mode = "dedicated"\n[daemon]\nthreads_number = 5000\n', /daemon\.threads_number/],
  ];
  for (const [text, want] of cases) {
    const f = join(d, 'c.toml');
    writeFileSync(f, text);
    const r = await runBin('containerd-nydus-grpc', [...base, '--config', f]);
    assert.equal(r.code, 1, `${text}: ${r.stderr}`);
    assert.match(oneLine(r.stderr), want);
    assert.match(r.stderr, /^containerd-nydus-grpc: error: /);
  }
});

test('a missing nydusd, a missing nydusd config, an unknown daemon mode and an unknown flag are clear errors', async (t) => {
  const d = dir(t);
  const base = ['--root', join(d, 'r'), '--address', join(d, 's.sock'), '--log-to-stdout'];
  let r = await runBin('containerd-nydus-grpc', [...base, '--nydusd', join(d, 'no-nydusd')]);
  assert.equal(r.code, 1);
  assert.match(oneLine(r.stderr), /nydusd binary ".*no-nydusd" does not exist/);

  r = await runBin('containerd-nydus-grpc', [
    ...base,
    '--nydusd',
    binPath('nydusd'),
    '--nydusd-config',
    join(d, 'none.json'),
  ]);
  assert.equal(r.code, 1);
  assert.match(oneLine(r.stderr), /nydusd config template ".*none.json"/);

  writeFileSync(join(d, 'bad.json'), '{"device": 5}');
  r = await runBin('containerd-nydus-grpc', [
    ...base,
    '--nydusd',
    binPath('nydusd'),
    '--nydusd-config',
    join(d, 'bad.json'),
  ]);
  assert.equal(r.code, 1);
  assert.match(oneLine(r.stderr), /device\.backend/);

  r = await runBin('containerd-nydus-grpc', [...base, '--daemon-mode', 'sometimes']);
  assert.equal(r.code, 1);
  assert.match(oneLine(r.stderr), /--daemon-mode/);

  r = await runBin('containerd-nydus-grpc', ['--no-such-flag']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown option/);
});
