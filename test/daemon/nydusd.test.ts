import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { FIXTURE, IN_CI, upstreamFixture } from '../helpers/fixtures.js';
import { needRoot } from '../helpers/env.js';
import { diffSnapshots, makeEveryEntryTree, snapshot, type PathFacts } from '../helpers/fs-tree.js';
import { binPath, runBin } from '../helpers/run-bin.js';
import { resultMd5s, resultTreeLines, treeJsonLines, type TreeNode } from '../helpers/tree-json.js';

/**
 * nydusd end to end: the real binary mounts images over FUSE and ordinary tools read them.
 * Every wait is bounded, and whatever happens the mount is removed and the daemon killed.
 */

const WAIT_MS = 15_000;
const execFileP = promisify(execFile);

function mounted(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mnt);
}

function canFuse(t: TestContext): boolean {
  if (!needRoot(t, 'mounting a FUSE file system')) return false;
  if (existsSync('/dev/fuse')) return true;
  const why = '/dev/fuse is missing';
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

interface Daemon {
  child: ChildProcess;
  mnt: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Start nydusd and wait until its mount appears (or it exits, or the wait runs out). */
async function startDaemon(mnt: string, args: string[]): Promise<Daemon> {
  const child = spawn(process.execPath, [binPath('nydusd'), ...args, '--mountpoint', mnt], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (c) => {
      code = c;
      resolve(c);
    }),
  );
  const d: Daemon = { child, mnt, stderr: () => stderr, exited };
  const deadline = Date.now() + WAIT_MS;
  while (!mounted(mnt)) {
    if (code !== undefined) throw new Error(`nydusd exited with ${code} before mounting: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`nydusd did not mount within ${WAIT_MS} ms: ${stderr}`);
    await sleep(20);
  }
  return d;
}

/** SIGTERM, then the daemon must exit 0 with the mount gone. */
async function stopDaemon(d: Daemon): Promise<void> {
  d.child.kill('SIGTERM');
  const code = await Promise.race([d.exited, sleep(WAIT_MS).then(() => 'hung' as const)]);
  assert.equal(code, 0, `nydusd after SIGTERM: ${String(code)}: ${d.stderr()}`);
  assert.equal(mounted(d.mnt), false, 'the mount is gone after SIGTERM');
}

/** Last resort in `finally`: never leave a mount or a daemon behind. */
function cleanup(d: Daemon | undefined, mnt: string): void {
  if (mounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: WAIT_MS });
  if (d !== undefined && d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGKILL');
}

async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await execFileP(cmd, args, { timeout: WAIT_MS * 4, maxBuffer: 64 << 20, ...(cwd && { cwd }) });
  return r.stdout;
}

/** `find M -type f -exec md5sum {} + | sort`, with the mount path stripped. */
async function md5sUnder(mnt: string): Promise<[string, string][]> {
  const out = await sh('find', ['.', '-type', 'f', '-exec', 'md5sum', '{}', '+'], mnt);
  return out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => [l.slice(0, 32), l.slice(34).replace(/^\./, '')] as [string, string])
    .sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
}

function tmp(): { dir: string; mnt: string } {
  const dir = mkdtempSync(join(tmpdir(), 'nydusd-'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  return { dir, mnt };
}

function v1Config(dir: string, blobDir: string, extra: Record<string, unknown> = {}): string {
  const p = join(dir, 'config.json');
  writeFileSync(
    p,
    JSON.stringify({
      device: { backend: { type: 'localfs', config: { dir: blobDir } } },
      mode: 'direct',
      ...extra,
    }),
  );
  return p;
}

test('nydusd serves the upstream v5 image: tree -J and md5 of every file equal the .result file; SIGTERM unmounts', async (t) => {
  if (!canFuse(t)) return;
  const boot = upstreamFixture(t, FIXTURE.v5Sha256);
  const blobs = upstreamFixture(t, FIXTURE.v5BlobDir);
  const resultPath = upstreamFixture(t, FIXTURE.v5Result);
  if (boot === undefined || blobs === undefined || resultPath === undefined) return;
  const result = readFileSync(resultPath, 'utf8');
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  try {
    d = await startDaemon(mnt, [
      '--config',
      v1Config(dir, blobs),
      '--bootstrap',
      boot,
      '--log-level',
      'warn',
    ]);
    // Re-rendered in the .result's layout: tree versions differ in how they print empty
    // directories and links; the root is named by the path given, the .result's by "".
    const root = (JSON.parse(await sh('tree', ['-a', '-J', '-v', mnt])) as TreeNode[])[0]!;
    root.name = '';
    assert.deepEqual(treeJsonLines(root), resultTreeLines(result));
    const wantMd5 = resultMd5s(result).sort((a, b) => (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
    assert.deepEqual(await md5sUnder(mnt), wantMd5);
    await stopDaemon(d);
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('nydusd serves the upstream v6 image: both files have the documented md5 sums', async (t) => {
  if (!canFuse(t)) return;
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blob = upstreamFixture(t, FIXTURE.v6Blob);
  if (boot === undefined || blob === undefined) return;
  const { dir, mnt } = tmp();
  let d: Daemon | undefined;
  try {
    d = await startDaemon(mnt, ['fuse', '-D', join(blob, '..'), '--bootstrap', boot, '--thread-num', '2']);
    assert.deepEqual(await md5sUnder(mnt), [
      ['4709cf8873e419ecedc7d43fdee4a75f', '/lib.rs'],
      ['5442bc7dc9dc5f985c7594e23866ae6f', '/sync_io.rs'],
    ]);
    await stopDaemon(d);
  } finally {
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
  }
});

function withoutXattrs(m: Map<string, PathFacts>): Map<string, PathFacts> {
  return new Map([...m].map(([k, v]) => [k, { ...v, xattrs: {} }]));
}

for (const [version, compressor, useConfig] of [
  ['6', 'zstd', true],
  ['5', 'lz4_block', false],
] as const) {
  test(`an image built by nydus-image create (v${version}, ${compressor}) mounts and equals its source`, async (t) => {
    if (!canFuse(t)) return;
    const { dir, mnt } = tmp();
    const src = join(dir, 'src');
    const blobDir = join(dir, 'blobs');
    mkdirSync(src);
    mkdirSync(blobDir);
    let d: Daemon | undefined;
    try {
      await makeEveryEntryTree(src, { bigDir: 300 });
      const boot = join(dir, 'boot');
      const c = await runBin(
        'nydus-image',
        ['create', '--fs-version', version, '--compressor', compressor, '-B', boot, '-D', blobDir, src],
        { timeoutMs: 120_000 },
      );
      assert.equal(c.code, 0, c.stderr);
      const args = useConfig
        ? ['--config', v1Config(dir, blobDir, { enable_xattr: true, digest_validate: true })]
        : ['-D', blobDir];
      d = await startDaemon(mnt, [...args, '--bootstrap', boot]);
      const want = snapshot(src, { skipRoot: true });
      const got = snapshot(mnt, { skipRoot: true });
      if (useConfig) assert.deepEqual(diffSnapshots(want, got), []);
      else assert.deepEqual(diffSnapshots(withoutXattrs(want), withoutXattrs(got)), []);
      await stopDaemon(d);
    } finally {
      cleanup(d, mnt);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('nydusd refuses bad input quickly with one line and exit code 1', async () => {
  const { dir, mnt } = tmp();
  try {
    const cfg = v1Config(dir, dir);
    const cases: [string[], RegExp][] = [
      [
        ['--config', cfg, '--mountpoint', mnt, '--bootstrap', join(dir, 'nope')],
        /Bootstrap .*nope.* does not exist/,
      ],
      [
        ['--config', cfg, '--mountpoint', join(dir, 'nomnt'), '--bootstrap', cfg],
        /Mountpoint .*nomnt.* does not exist/,
      ],
      [['--config', join(dir, 'nocfg'), '--mountpoint', mnt, '--bootstrap', cfg], /Cannot read config/],
      [['-D', join(dir, 'noblobs'), '--mountpoint', mnt, '--bootstrap', cfg], /Blob directory .*noblobs/],
    ];
    for (const [args, re] of cases) {
      const r = await runBin('nydusd', args, { timeoutMs: WAIT_MS });
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^nydusd: error: /);
      assert.match(lines[0]!, re);
      assert.ok(r.ms < WAIT_MS, `took ${r.ms} ms`);
    }
    const s3 = join(dir, 's3.json');
    writeFileSync(
      s3,
      JSON.stringify({ version: 2, backend: { type: 's3', s3: { region: 'r', bucket_name: 'b' } } }),
    );
    const r = await runBin('nydusd', ['--config', s3, '--mountpoint', mnt, '--bootstrap', s3]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /backend s3 is not supported yet/);
  } finally {
    if (mounted(mnt)) spawnSync('umount', ['-l', mnt], { timeout: WAIT_MS });
    rmSync(dir, { recursive: true, force: true });
  }
});
