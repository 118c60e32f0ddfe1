import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { lstatSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../src/daemon/api/control.js';
import { jsonDisplay, renderCacheMetrics, rustFloat } from '../../src/daemon/api/render.js';
import { binPath, runBin, type RunResult } from '../helpers/run-bin.js';
import {
  BACKEND_METRICS,
  BLOBCACHE_METRICS,
  DAEMON_INFO,
  FS_METRICS,
  startFake,
  tempDir,
  type Running,
} from './fake-control.js';

/**
 * nydusctl run as a child process against the API server with a fake daemon. The expected texts
 * are upstream's nydusctl layout (src/bin/nydusctl/commands.rs) filled with the fake's numbers.
 */

let fake: Running;
before(async () => {
  fake = await startFake();
});
after(async () => {
  await fake.stop();
});

function ctl(args: readonly string[]): Promise<RunResult> {
  return runBin('nydusctl', ['-S', fake.sock, ...args]);
}

/** Exit code 1, nothing on stdout, exactly one `nydusctl: error:` line matching `pattern`, no stack. */
function assertFails(r: RunResult, pattern: RegExp): void {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^nydusctl: error: /);
  assert.match(lines[0]!, pattern);
}

const INFO_TEXT =
  '\n' +
  'Version:                "v2.3.0"\n' +
  'Status:                 "RUNNING"\n' +
  'Profile:                "release"\n' +
  'Commit:                 "0123456789abcdef"\n' +
  'Instances:\n' +
  '\tInstance Mountpoint:  /\n' +
  '\tType:  Rafs\n' +
  '\tMounted Time:  2024-05-06 07:08:09.5 +00:00:00\n' +
  '\tMode:  cached\n' +
  '\tPrefetch:  true\n' +
  '\tPrefetch Merging Size:  131072\n' +
  '\n' +
  '\tInstance Mountpoint:  /pt\n' +
  '\tType:  PassthroughFs\n' +
  '\tMounted Time:  2024-05-06 07:08:10.0 +00:00:00\n';

const BACKEND_TEXT =
  '\n' +
  'Backend Type:       "localfs"\n' +
  'Read Amount:        3145728 Bytes (3 MB)\n' +
  'Read Count:         12\n' +
  'Read Errors:        1\n' +
  '\n' +
  'Block Sizes:             <1K     1K~     4K~     16K~    64K~    128K~   512K~   1M~     \n' +
  'Average Latency(millis): 5       5       10      0       0       0       0       60      \n' +
  '\n' +
  'Block Sizes:             <1K     1K~     4K~     16K~    64K~    128K~   512K~   1M~     \n' +
  'Request Count:           2       4       3       0       0       0       0       3       \n';

const CACHE_TEXT =
  '\n' +
  'Partial Hits:               5\n' +
  'Whole Hits:                 7\n' +
  'Total Read:                 20\n' +
  'Directory:                  "/cache"\n' +
  'Files:                      ["/cache/blob1","/cache/blob1.chunk_map"]\n' +
  'Persister Buffer:           0\n' +
  '\n' +
  'Prefetch Workers:           2\n' +
  'Prefetch Amount:            2097152 = 2048 KB\n' +
  'Prefetch Requests:          4\n' +
  'Prefetch Average Size:      524288 Bytes\n' +
  'Prefetch Duration:          2 Seconds\n' +
  'Prefetch Bandwidth:         1 MB/S\n' +
  'Prefetch Request Latency:   0.25 Seconds\n' +
  'Prefetch Unmerged:          3\n';

const FSSTATS_TEXT =
  '\n' +
  'Read Latency:   <1ms    ~20ms   ~50ms   ~100ms  ~500ms  ~1s     ~2s     2s~     \n' +
  'Reads Count:    1       2       3       0       0       0       0       0       \n' +
  '\n' +
  'Read Errors: 2\n' +
  'Read Data: 5242880Bytes (5MB)\n' +
  '\n' +
  'FOP Counters:\n' +
  'Getattr(1) Readlink(2) Open(3) Release(4) Read(5) Statfs(6) Getxattr(7) Listxattr(8)\n' +
  'Opendir(9) Lookup(10) Readdir(11) Readdirplus(12) Access(13) Forget(14) BatchForget(15)\n';

/** serde_json's compact JSON with sorted keys. */
function sortedJson(v: unknown): string {
  const sort = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(sort);
    if (typeof x === 'object' && x !== null)
      return Object.fromEntries(
        Object.keys(x)
          .sort()
          .map((k) => [k, sort((x as Record<string, unknown>)[k])]),
      );
    return x;
  };
  return JSON.stringify(sort(v));
}

describe('nydusctl against the API server', () => {
  test('info prints upstream’s layout: version, state, then each instance', async () => {
    const r = await ctl(['info']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, INFO_TEXT);
    assert.equal(r.stderr, '');
  });

  test('--raw info prints the JSON (compact, keys sorted as serde_json does); -r works after the subcommand too', async () => {
    for (const args of [
      ['--raw', 'info'],
      ['info', '-r'],
    ]) {
      const r = await ctl(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${sortedJson(DAEMON_INFO)}\n`);
      assert.deepEqual(JSON.parse(r.stdout), DAEMON_INFO);
    }
  });

  test('set log-level sends {"log_level"} and prints nothing; a refused level shows the server message', async () => {
    let r = await ctl(['set', 'log-level', 'debug']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.deepEqual(fake.control.callsOf('setLogLevel').at(-1), ['debug']);
    r = await ctl(['set', 'log-level', 'loud']);
    assertFails(r, /HTTP status 400: Configure\(Unknown log level "loud"\)$/);
    r = await ctl(['set', 'colour', 'blue']);
    assert.equal(r.code, 2, 'usage error');
    assert.match(r.stderr, /'colour' is invalid/);
  });

  test('metrics backend / cache / fsstats print upstream’s tables', async () => {
    const cases: [string, string][] = [
      ['backend', BACKEND_TEXT],
      ['cache', CACHE_TEXT],
      ['fsstats', FSSTATS_TEXT],
    ];
    for (const [category, text] of cases) {
      const r = await ctl(['metrics', category]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, text, category);
    }
    const kinds = fake.control.callsOf('metrics').slice(-3);
    assert.deepEqual(kinds, [
      ['backend', undefined, false],
      ['blobcache', undefined, false],
      ['fs', undefined, false],
    ]);
  });

  test('metrics --raw prints each answer as JSON', async () => {
    const cases: [string, unknown][] = [
      ['backend', BACKEND_METRICS],
      ['cache', BLOBCACHE_METRICS],
      ['fsstats', FS_METRICS],
    ];
    for (const [category, value] of cases) {
      const r = await ctl(['--raw', 'metrics', category]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${sortedJson(value)}\n`);
    }
  });

  test('metrics errors show the server message (no instance: NoCounter)', async () => {
    fake.control.failNext.set('metrics', new ApiError(404, 'NoCounter'));
    assertFails(
      await ctl(['metrics', 'backend']),
      /HTTP status 404: BackendMetrics\(Metrics\(Stats\(NoCounter\)\)\)$/,
    );
    assertFails(
      await ctl(['metrics', 'backend', '-I', 'x1']),
      /^nydusctl: error: Invalid interval input\. invalid digit found in string$/,
    );
    assertFails(
      await ctl(['metrics', 'backend', '-I', '4294967296']),
      /Invalid interval input\. number too large to fit in target type$/,
    );
  });

  test('metrics backend -I 1 prints the per-interval deltas until SIGINT, then exits 0', async () => {
    const next = (k: number): Record<string, unknown> => ({
      ...BACKEND_METRICS,
      read_count: 12 + 4 * k,
      read_amount_total: 3145728 + 8192 * k,
      read_cumulative_latency_millis_total: 240 + 20 * k,
      read_cumulative_latency_millis_dist: [10, 20 + 12 * k, 30, 0, 0, 0, 0, 180 + 8 * k],
      read_count_block_size_dist: [2, 4 + 2 * k, 3, 0, 0, 0, 0, 3 + 2 * k],
    });
    fake.control.backendSamples = [BACKEND_METRICS, next(1), next(2), next(3)];
    const child = spawn(
      process.execPath,
      [binPath('nydusctl'), '-S', fake.sock, 'metrics', 'backend', '-I', '1'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    const deadline = Date.now() + 20000;
    while ((stdout.match(/<<< <<< <<< <<< <<<\n/g) ?? []).length < 2 && Date.now() < deadline)
      await new Promise((res) => setTimeout(res, 50));
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
    const one =
      '\n>>> >>> >>> >>> >>>\n' +
      'Backend Read Bandwidth:     8 KB/S\n' +
      'Backend Average IO Size:    2048 Bytes\n' +
      'Backend Average Latency:    5 millis\n' +
      '\nBlock Sizes/millis:\n' +
      '<1K     1K~     4K~     16K~    64K~    128K~   512K~   1M~     \n' +
      '0       6       0       0       0       0       0       4       \n' +
      '<<< <<< <<< <<< <<<\n';
    assert.ok(stdout.startsWith(one + one), stdout);
  });

  test('metrics fsstats -r -I 1 prints one JSON line per sample', async () => {
    const child = spawn(
      process.execPath,
      [binPath('nydusctl'), '-S', fake.sock, '-r', 'metrics', 'fsstats', '-I', '1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    const deadline = Date.now() + 20000;
    while (stdout.split('\n').length < 3 && Date.now() < deadline)
      await new Promise((res) => setTimeout(res, 50));
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    const lines = stdout.trimEnd().split('\n');
    assert.ok(lines.length >= 2);
    for (const l of lines) assert.equal(l, sortedJson(FS_METRICS));
  });

  test('mount posts the config file text; -t passes fs_type; umount deletes; errors show the server message', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const cfg = join(dir, 'config.toml');
      const text = 'version = 2\n[backend]\ntype = "localfs"\n[backend.localfs]\ndir = "/blobs"\n';
      writeFileSync(cfg, text);
      let r = await ctl(['mount', '-s', '/images/a.boot', '-c', cfg, '-m', '/sub/a']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.deepEqual(fake.control.callsOf('mount').at(-1), [
        '/sub/a',
        { source: '/images/a.boot', fsType: 'rafs', config: text },
      ]);
      r = await ctl([
        'mount',
        '--source',
        '/dir',
        '--config',
        cfg,
        '--mountpoint',
        '/pt2',
        '-t',
        'passthrough_fs',
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(fake.control.callsOf('mount').at(-1), [
        '/pt2',
        { source: '/dir', fsType: 'passthrough_fs', config: text },
      ]);
      assertFails(
        await ctl(['mount', '-s', '/x', '-c', cfg, '-m', '/sub/a']),
        /HTTP status 400: Mount\(Mountpoint "\/sub\/a" is already mounted\)$/,
      );
      assertFails(
        await ctl(['mount', '-s', '/x', '-c', join(dir, 'nope.json'), '-m', '/n']),
        /Failed to read mount config .*nope\.json: ENOENT/,
      );
      r = await ctl(['umount', '-m', '/sub/a']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(fake.control.callsOf('umount').at(-1), ['/sub/a']);
      assertFails(
        await ctl(['umount', '-m', '/sub/a']),
        /HTTP status 404: Mount\(Mountpoint "\/sub\/a" is not mounted\)$/,
      );
      r = await ctl(['mount', '-s', '/x', '-m', '/n']);
      assert.equal(r.code, 2, 'missing -c is a usage error');
    } finally {
      cleanup();
    }
  });
});

describe('nydusctl without a daemon', () => {
  test('a missing socket is one clear error line, exit 1', async () => {
    const r = await runBin('nydusctl', ['-S', '/nonexistent-nydus/api.sock', 'info']);
    assertFails(r, /Cannot connect to nydusd API socket "\/nonexistent-nydus\/api\.sock": no such file/);
  });

  test('a socket nobody listens on (left by a killed daemon) is "connection refused"', async () => {
    const { dir, cleanup } = tempDir();
    const sock = join(dir, 'dead.sock');
    try {
      const code = `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`;
      try {
        execFileSync(process.execPath, ['-e', code], { stdio: 'ignore' });
      } catch {
        // killed by SIGKILL, as intended
      }
      assert.ok(lstatSync(sock).isSocket());
      const r = await runBin('nydusctl', ['-S', sock, 'metrics', 'fsstats']);
      assertFails(r, /Cannot connect to nydusd API socket ".*dead\.sock": connection refused/);
    } finally {
      cleanup();
    }
  });

  test('-S is required (usage error, exit 2)', async () => {
    const r = await runBin('nydusctl', ['info']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /required option '-S, --sock <sock>' not specified/);
  });
});

describe('render helpers', () => {
  test('rustFloat prints f64 as Rust’s Display does', () => {
    assert.equal(rustFloat(2), '2');
    assert.equal(rustFloat(0.25), '0.25');
    assert.equal(rustFloat(1e21), '1000000000000000000000');
    assert.equal(rustFloat(1.5e-7), '0.00000015');
    assert.equal(rustFloat(-2.5e22), '-25000000000000000000000');
    assert.equal(rustFloat(NaN), 'NaN');
    assert.equal(rustFloat(Infinity), 'inf');
    assert.equal(rustFloat(-Infinity), '-inf');
    assert.equal(rustFloat(-0), '-0');
  });

  test('jsonDisplay sorts keys and shows a missing value as null', () => {
    assert.equal(
      jsonDisplay({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: 'x' } }),
      '{"a":{"c":"x","d":[2,{"y":2,"z":1}]},"b":1}',
    );
    assert.equal(jsonDisplay(undefined), 'null');
  });

  test('a cache with no prefetch requests prints NaN and 0 like upstream (no division error)', () => {
    const text = renderCacheMetrics({
      ...BLOBCACHE_METRICS,
      prefetch_data_amount: 0,
      prefetch_requests_count: 0,
      prefetch_cumulative_time_millis: 0,
      prefetch_end_time_secs: 100,
    });
    for (const line of [
      'Prefetch Average Size:      0 Bytes\n',
      'Prefetch Duration:          0 Seconds\n',
      'Prefetch Bandwidth:         NaN MB/S\n',
      'Prefetch Request Latency:   NaN Seconds\n',
    ])
      assert.ok(text.includes(line), `${line} in ${text}`);
  });
});
