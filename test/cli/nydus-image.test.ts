import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';
import { runBin } from '../helpers/run-bin.js';
import { resultMd5s } from '../helpers/tree-json.js';

const V6_BLOB_ID = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';
const V5_BLOB_ID = '7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'nydus-cli-'));
}

/**
 * An error run: the given exit code, no stack trace, and exactly one error line on stderr (log
 * lines at info level and a usage hint may surround it).
 */
function assertCleanError(r: { code: number | null; stderr: string }, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, `exit code; stderr: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at .+\(.*:\d+:\d+\)/, 'no stack trace');
  const lines = r.stderr.trim().split('\n');
  assert.match(lines.find((l) => /^(nydus-image: )?error/.test(l)) ?? '', pattern);
  assert.ok(lines.filter((l) => /^(nydus-image: )?error/.test(l)).length === 1, r.stderr);
}

test('check: v6 upstream image with its blob', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blobs = upstreamFixture(t, FIXTURE.v6BlobDir);
  if (boot === undefined || blobs === undefined) return;
  const dir = tmp();
  try {
    const json = join(dir, 'out.json');
    const r = await runBin('nydus-image', ['check', boot, '-D', blobs, '-J', json]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^RAFS filesystem metadata is valid, referenced data blobs: \n/);
    assert.ok(
      r.stdout.includes(
        `\t 0: ${V6_BLOB_ID}, compressed size 14554, uncompressed size 36864, chunk size: 1048576, chunk count: 2, features: aligned cap_toc chunk-digest tar-header toc\n`,
      ),
      r.stdout,
    );
    assert.match(r.stdout, /RAFS filesystem data is valid: 2 chunks in 1 blobs verified/);
    const out = JSON.parse(readFileSync(json, 'utf8')) as Record<string, unknown>;
    assert.deepEqual(
      {
        bootstrap: out['bootstrap'],
        blobs: out['blobs'],
        fs_version: out['fs_version'],
        compressor: out['compressor'],
      },
      { bootstrap: boot, blobs: [V6_BLOB_ID], fs_version: '6', compressor: 'zstd' },
    );
    assert.deepEqual(Object.keys(out).sort(), [
      'blobs',
      'bootstrap',
      'compressor',
      'external_blobs',
      'external_bootstrap',
      'fs_version',
      'trace',
      'version',
    ]);
    // -B (deprecated) and metadata-only check
    const m = await runBin('nydus-image', ['check', '-B', boot, '-v']);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /inode: \/lib\.rs, .* size 16931/);
    assert.doesNotMatch(m.stdout, /filesystem data is valid/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('check -C: the blob location comes from a nydusd config, read as nydusd reads it', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blobs = upstreamFixture(t, FIXTURE.v6BlobDir);
  if (boot === undefined || blobs === undefined) return;
  const dir = tmp();
  try {
    const configs: Record<string, string> = {
      // v1 JSON with the // comments upstream docs show, and a key nydusd does not know.
      'v1.json': `{\n  // the blob directory\n  "device": {"backend": {"type": "localfs", "config": {"dir": "${blobs}"}},\n    "cache": {"type": "dummycache"}},\n  "mode": "direct", "no_such_key": 1\n}`,
      'v2.toml': `version = 2\nid = "check"\n[backend]\ntype = "localfs"\n[backend.localfs]\ndir = "${blobs}"\n`,
    };
    for (const [name, text] of Object.entries(configs)) {
      const cfg = join(dir, name);
      writeFileSync(cfg, text);
      const r = await runBin('nydus-image', ['check', boot, '-C', cfg]);
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.match(r.stdout, /RAFS filesystem data is valid: 2 chunks in 1 blobs verified/, name);
      if (name === 'v1.json') assert.match(r.stderr, /no_such_key/, 'unknown keys are warned about');
    }
    const bad: [string, RegExp][] = [
      ['{"device": {"backend": {"type": "localfs", "config": {"dir": 7}}}}', /backend\.config\.dir|dir/],
      [
        '{"device": {"backend": {"type": "registry", "config": {"host": "h", "repo": "r"}}}}',
        /backend registry is not supported/,
      ],
      ['{ not json', /config/i],
    ];
    for (const [text, pattern] of bad) {
      const cfg = join(dir, 'bad.json');
      writeFileSync(cfg, text);
      assertCleanError(await runBin('nydus-image', ['check', boot, '-C', cfg]), 1, pattern);
    }
    assertCleanError(
      await runBin('nydus-image', ['check', boot, '-C', join(dir, 'missing.json')]),
      1,
      /Cannot read config/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('check: v5 upstream images with their blob', async (t) => {
  for (const rel of [FIXTURE.v5Sha256, FIXTURE.v5Blake3]) {
    const boot = upstreamFixture(t, rel);
    const blobs = upstreamFixture(t, FIXTURE.v5BlobDir);
    if (boot === undefined || blobs === undefined) return;
    const r = await runBin('nydus-image', ['check', boot, '-D', blobs]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(
      r.stdout.includes(
        `\t 0: ${V5_BLOB_ID}, compressed size 3508766, uncompressed size 3508766, chunk size: 1048576, chunk count: 23, features: \n`,
      ),
      r.stdout,
    );
    assert.match(r.stdout, /data is valid: 23 chunks in 1 blobs/);
  }
});

test('check: a flipped byte in the data blob is found', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blob = upstreamFixture(t, FIXTURE.v6Blob);
  if (boot === undefined || blob === undefined) return;
  const dir = tmp();
  try {
    const bad = readFileSync(blob);
    bad[5000] = bad[5000]! ^ 0x40; // inside the second zstd chunk
    writeFileSync(join(dir, V6_BLOB_ID), bad);
    const r = await runBin('nydus-image', ['check', boot, '-D', dir]);
    assertCleanError(r, 1, /^nydus-image: error: Failed to check data of .*(digest|decompress|zstd)/i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unpack: v5 upstream images unpack to the files and md5 sums of .result', async (t) => {
  for (const rel of [FIXTURE.v5Sha256, FIXTURE.v5Blake3]) {
    const boot = upstreamFixture(t, rel);
    const blobs = upstreamFixture(t, FIXTURE.v5BlobDir);
    const result = upstreamFixture(t, `${rel}.result`);
    if (boot === undefined || blobs === undefined || result === undefined) return;
    const dir = tmp();
    try {
      const tarFile = join(dir, 'out.tar');
      const r = await runBin('nydus-image', ['unpack', boot, '-D', blobs, '--output', tarFile]);
      assert.equal(r.code, 0, r.stderr);
      const root = join(dir, 'root');
      mkdirSync(root);
      execFileSync('tar', ['-xf', tarFile, '-C', root]);
      const sums = execFileSync(
        'sh',
        ['-c', 'find . -type f -exec md5sum {} + | sed "s|  \\./|  /|" | sort'],
        { cwd: root, encoding: 'utf8' },
      );
      const want = resultMd5s(readFileSync(result, 'utf8'));
      assert.deepEqual(
        sums
          .trim()
          .split('\n')
          .map((l) => l.split('  ')),
        want.map(([h, p]) => [h, p]),
      );
      // hardlinks came back as hardlinks: three names, one inode
      const ino = (p: string): string =>
        execFileSync('stat', ['-c', '%i %h', join(root, p)], { encoding: 'utf8' }).trim();
      assert.equal(ino('hardlink-test/foo'), ino('normal-file-test/test.sh'));
      assert.match(ino('hardlink-test/foo'), / 3$/);
      assert.equal(
        execFileSync('readlink', [join(root, 'symlink-test/root-1')], { encoding: 'utf8' }).trim(),
        '/////////////////',
      );
      // listing: the tar holds every non-root entry of the image exactly once
      const listing = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' }).trim().split('\n');
      assert.equal(new Set(listing).size, listing.length);
      assert.equal(listing.length, 53);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('unpack: v6 upstream image, with --blob and with --blob-dir', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  const blob = upstreamFixture(t, FIXTURE.v6Blob);
  if (boot === undefined || blob === undefined) return;
  const dir = tmp();
  try {
    for (const src of [
      ['-b', blob],
      ['-D', dirname(blob)],
    ]) {
      const tarFile = join(dir, 'v6.tar');
      const r = await runBin('nydus-image', ['unpack', boot, ...src, '--output', tarFile]);
      assert.equal(r.code, 0, r.stderr);
      const sums = execFileSync(
        'sh',
        ['-c', `tar -xOf ${tarFile} lib.rs | md5sum; tar -xOf ${tarFile} sync_io.rs | md5sum`],
        { encoding: 'utf8' },
      );
      assert.equal(sums, '4709cf8873e419ecedc7d43fdee4a75f  -\n5442bc7dc9dc5f985c7594e23866ae6f  -\n');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unpack: failures leave no output file behind', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  if (boot === undefined) return;
  const dir = tmp();
  try {
    const out = join(dir, 'out.tar');
    const r = await runBin('nydus-image', ['unpack', boot, '-D', dir, '--output', out]);
    assertCleanError(r, 1, /not found in/);
    assert.deepEqual(readdirSync(dir), []);
    const e = await runBin('nydus-image', ['unpack', boot, '-D', dir, '--output', '']);
    assertCleanError(e, 1, /Invalid empty --output option/);
    const n = await runBin('nydus-image', ['unpack', boot, '--output', out]);
    assertCleanError(n, 1, /--blob, --blob-dir or --backend-type must be specified/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('inspect: request mode prints JSON', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v5Sha256);
  const v6 = upstreamFixture(t, FIXTURE.v6Boot);
  if (boot === undefined || v6 === undefined) return;
  const req = async (b: string, r: string): Promise<unknown> => {
    const res = await runBin('nydus-image', ['inspect', b, '-R', r]);
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout);
  };
  const stats = (await req(boot, 'stats')) as { inodes_count: number; version: number; chunk_size: number };
  assert.deepEqual([stats.inodes_count, stats.version, stats.chunk_size], [51, 5, 1048576]);
  assert.deepEqual(await req(boot, 'blobs'), [
    {
      blob_id: V5_BLOB_ID,
      readahead_offset: 0,
      readahead_size: 0,
      decompressed_size: 3508766,
      compressed_size: 3508766,
    },
  ]);
  const ls = (await req(boot, 'ls')) as { type: string; name: string }[];
  assert.deepEqual(
    ls.map((e) => `${e.type}${e.name}`),
    ['dhardlink-test', 'dnormal-file-test', 'dsymlink-test'],
  );
  const st = (await req(v6, 'stat lib.rs')) as { size: number; chunks: unknown[] };
  assert.equal(st.size, 16931);
  assert.equal(st.chunks.length, 1);
  const ic = (await req(boot, 'icheck 5')) as { paths: string[]; nlink: number };
  assert.deepEqual(ic.paths.sort(), [
    '/hardlink-test/foo',
    '/hardlink-test/test.sh',
    '/normal-file-test/test.sh',
  ]);
  assert.equal(ic.nlink, 3);
  assert.deepEqual(await req(boot, 'prefetch'), []);
  const ch = (await req(v6, 'chunk 0')) as { file: string }[];
  assert.deepEqual(
    ch.map((c) => c.file),
    ['/lib.rs'],
  );
  const bad = await runBin('nydus-image', ['inspect', boot, '-R', 'frobnicate']);
  assertCleanError(bad, 1, /Unsupported inspect request "frobnicate"/);
  const badArg = await runBin('nydus-image', ['inspect', boot, '-R', 'chunk x']);
  assertCleanError(badArg, 1, /Wrong OFFSET/);
});

test('inspect: interactive prompt', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  if (boot === undefined) return;
  const r = await runBin('nydus-image', ['inspect', boot], {
    input: 'stats\nls\nhelp\nbogus\nstat sync_io.rs\nexit\n',
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Inspecting RAFS :> /);
  assert.match(r.stdout, /Version: {16}6/);
  assert.match(r.stdout, /- {4}\d+\s+"lib.rs"/);
  assert.match(r.stdout, /stats: {14}Display RAFS filesystem metadata/);
  assert.match(r.stdout, /Failed to execute command, Unsupported inspect request "bogus"/);
  assert.match(r.stdout, /Size: {15}13400/);
});

test('stat: text and JSON', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v5Sha256);
  if (boot === undefined) return;
  const r = await runBin('nydus-image', ['stat', '-B', boot]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Base Image Statistics:/);
  assert.match(r.stdout, /Directories: {12}24\nFiles: {18}23\nSymlinks: {15}7\n/);
  const dir = tmp();
  try {
    copyFileSync(boot, join(dir, 'a'));
    copyFileSync(boot, join(dir, 'b'));
    const j = join(dir, 'stat.json');
    const s = await runBin('nydus-image', ['stat', '-D', dir, '-J', j]);
    assert.equal(s.code, 0, s.stderr);
    const out = JSON.parse(readFileSync(j, 'utf8')) as {
      dedup_enabled: boolean;
      base_image: { own_chunks: number; dedup_chunks: number };
    };
    assert.equal(out.dedup_enabled, true);
    assert.equal(out.base_image.own_chunks, 2 * out.base_image.dedup_chunks);
    const none = await runBin('nydus-image', ['stat']);
    assertCleanError(none, 1, /One of --bootstrap and --blob-dir must be specified/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('usage errors and bad input files', async (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  if (boot === undefined) return;
  assertCleanError(
    await runBin('nydus-image', ['check', boot, '--frobnicate']),
    2,
    /unknown option '--frobnicate'/,
  );
  assertCleanError(await runBin('nydus-image', ['frob']), 2, /unknown command 'frob'/);
  assertCleanError(await runBin('nydus-image', ['check']), 1, /Missing BOOTSTRAP/);
  assertCleanError(
    await runBin('nydus-image', ['check', '/nonexistent/boot']),
    1,
    /Cannot read bootstrap "\/nonexistent\/boot"/,
  );
  assertCleanError(
    await runBin('nydus-image', ['-l', 'loud', 'check', boot]),
    2,
    /Allowed choices are trace, debug, info, warn, error/,
  );
  const dir = tmp();
  try {
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    assertCleanError(await runBin('nydus-image', ['check', empty]), 1, /is empty, not a RAFS bootstrap/);
    const junk = join(dir, 'junk');
    writeFileSync(junk, Buffer.alloc(8192, 7));
    assertCleanError(
      await runBin('nydus-image', ['check', junk]),
      1,
      /neither a RAFS bootstrap nor a data blob with inline metadata/,
    );
    const trunc = join(dir, 'trunc');
    writeFileSync(trunc, readFileSync(boot).subarray(0, 5000));
    assertCleanError(await runBin('nydus-image', ['check', trunc]), 1, /^nydus-image: error: /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--help of each subcommand lists its upstream flags', async () => {
  const flags: Record<string, string[]> = {
    check: ['-B, --bootstrap', '-D, --blob-dir', '-C, --config', '-v, --verbose', '-J, --output-json'],
    inspect: ['-B, --bootstrap', '-D, --blob-dir', '-C, --config', '-R, --request'],
    stat: [
      '-B, --bootstrap',
      '-D, --blob-dir',
      '-T, --target',
      '-C, --config',
      '--digester',
      '-J, --output-json',
    ],
    unpack: [
      '-B, --bootstrap',
      '-b, --blob',
      '-D, --blob-dir',
      '--backend-type',
      '--backend-config',
      '--backend-config-file',
      '--output',
    ],
  };
  for (const [cmd, want] of Object.entries(flags)) {
    const r = await runBin('nydus-image', [cmd, '--help']);
    assert.equal(r.code, 0);
    for (const f of want) assert.ok(r.stdout.includes(f), `${cmd} --help lacks ${f}`);
  }
  const top = await runBin('nydus-image', ['--help']);
  for (const c of [
    'check',
    'inspect',
    'stat',
    'unpack',
    '-l, --log-level',
    '-L, --log-file',
    '-V, --version',
  ])
    assert.ok(top.stdout.includes(c), c);
  const v = await runBin('nydus-image', ['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /Version:\s+\d+\.\d+\.\d+/);
});
