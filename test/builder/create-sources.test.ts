import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import { TarType } from '../../src/tar/header.js';
import { TarWriter } from '../../src/tar/writer.js';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';
import { diffSnapshots, makeEveryEntryTree, snapshot } from '../helpers/fs-tree.js';
import { binPath, runBin } from '../helpers/run-bin.js';
import { extractTar, needRoot } from '../helpers/env.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'nydus-src-'));

async function roundTrip(boot: string, blobDir: string, into: string): Promise<void> {
  const tarFile = `${into}.tar`;
  const u = await runBin('nydus-image', ['unpack', boot, '-D', blobDir, '--output', tarFile], {
    timeoutMs: 120000,
  });
  assert.equal(u.code, 0, u.stderr);
  extractTar(tarFile, into);
}

test('tar-rafs, targz-rafs and a tar.gz on stdin build the same tree as the directory', async (t) => {
  if (!needRoot(t)) return;
  const dir = tmp();
  try {
    const src = join(dir, 'src');
    mkdirSync(src);
    await makeEveryEntryTree(src, { bigDir: 500 });
    const want = snapshot(src, { skipRoot: true, skipSockets: true });
    const tarFile = join(dir, 'src.tar');
    execFileSync(
      'tar',
      ['--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', src, '-cf', tarFile, '.'],
      { stdio: 'ignore' },
    );
    execFileSync('sh', ['-c', `gzip -c ${tarFile} > ${tarFile}.gz`]);
    const cases: [string, string[]][] = [
      ['tar', ['--type', 'tar-rafs', tarFile]],
      ['targz', ['--type', 'targz-rafs', `${tarFile}.gz`]],
    ];
    for (const [name, args] of cases) {
      const out = join(dir, name);
      mkdirSync(out);
      const r = await runBin('nydus-image', ['create', ...args, '-B', join(out, 'boot'), '-D', out], {
        timeoutMs: 120000,
      });
      assert.equal(r.code, 0, r.stderr);
      await roundTrip(join(out, 'boot'), out, join(out, 'root'));
      assert.deepEqual(
        diffSnapshots(want, snapshot(join(out, 'root'), { skipRoot: true, skipSockets: true })),
        [],
        name,
      );
    }
    // streamed from stdin: same blob as from the file (same bytes in, same bytes out)
    const out = join(dir, 'stdin');
    mkdirSync(out);
    execFileSync(
      'sh',
      [
        '-c',
        `cat ${tarFile}.gz | ${process.execPath} ${binPath('nydus-image')} create --type targz-rafs -B ${join(out, 'boot')} -D ${out} /dev/stdin`,
      ],
      { stdio: 'ignore' },
    );
    const blobOf = (d: string): string | undefined => readdirSync(d).find((n) => /^[0-9a-f]{64}$/.test(n));
    assert.equal(blobOf(out), blobOf(join(dir, 'targz')));
    // A plain tar on a pipe: the data of files not yet buffered (the 3 MiB one at least) is read
    // from the pipe straight into chunk buffers; same bytes out as from the tar file.
    const piped = join(dir, 'pipe');
    mkdirSync(piped);
    execFileSync(
      'sh',
      [
        '-c',
        `cat ${tarFile} | ${process.execPath} ${binPath('nydus-image')} create --type tar-rafs -B ${join(piped, 'boot')} -D ${piped} /dev/stdin`,
      ],
      { stdio: 'ignore' },
    );
    assert.equal(blobOf(piped), blobOf(join(dir, 'tar')));
    assert.deepEqual(readFileSync(join(piped, 'boot')), readFileSync(join(dir, 'tar', 'boot')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('upstream tar fixtures: all-entry-type.tar builds, empty.tar builds an empty image', async (t) => {
  const all = upstreamFixture(t, FIXTURE.allEntryTar);
  const empty = upstreamFixture(t, FIXTURE.emptyTar);
  if (all === undefined || empty === undefined) return;
  const dir = tmp();
  try {
    const r = await runBin('nydus-image', [
      'create',
      '--type',
      'tar-rafs',
      '-B',
      join(dir, 'boot'),
      '-D',
      dir,
      all,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const ic = await runBin('nydus-image', ['inspect', join(dir, 'boot'), '-R', 'stat tar']);
    assert.equal(ic.code, 0, ic.stderr);
    const st = await runBin('nydus-image', ['check', join(dir, 'boot'), '-D', dir]);
    assert.equal(st.code, 0, st.stderr);
    const e = await runBin('nydus-image', [
      'create',
      '--type',
      'tar-rafs',
      '-B',
      join(dir, 'empty.boot'),
      empty,
    ]);
    assert.equal(e.code, 0, e.stderr);
    const ls = await runBin('nydus-image', ['inspect', join(dir, 'empty.boot'), '-R', 'ls']);
    assert.equal(ls.stdout.trim(), '[]');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A tar written with our TarWriter from (path, type, linkname) triples. */
async function tarOf(file: string, entries: [string, number, string?][]): Promise<void> {
  const { createWriteStream } = await import('node:fs');
  const out = createWriteStream(file);
  const w = new TarWriter(out);
  for (const [p, type, link] of entries) {
    const base = {
      path: Buffer.from(p),
      type,
      mode: type === TarType.DIR ? 0o40755 : 0o100644,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: 0,
      mtimeNsec: 0,
    };
    if (type === TarType.FILE) await w.add({ ...base, size: 2 }, [Buffer.from('hi')]);
    else await w.add(link === undefined ? base : { ...base, linkname: Buffer.from(link) });
  }
  await w.finish();
  await new Promise<void>((resolve) => out.end(resolve));
}

test('bad input: clear one-line errors and no output left behind', async () => {
  const dir = tmp();
  try {
    const out = join(dir, 'out');
    mkdirSync(out);
    const expectFail = async (args: string[], pattern: RegExp, code = 1): Promise<void> => {
      const r = await runBin('nydus-image', ['create', ...args, '-B', join(out, 'boot'), '-D', out], {
        timeoutMs: 60000,
      });
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+\)/, 'no stack trace');
      assert.deepEqual(readdirSync(out), [], `${args.join(' ')} left files behind`);
    };
    const evil = join(dir, 'evil.tar');
    await tarOf(evil, [
      ['ok', TarType.FILE],
      ['../evil', TarType.FILE],
    ]);
    await expectFail(['--type', 'tar-rafs', evil], /escapes the root|\.\./);
    const evil2 = join(dir, 'evil2.tar');
    await tarOf(evil2, [
      ['a', TarType.DIR],
      ['a/../../x', TarType.FILE],
    ]);
    await expectFail(['--type', 'tar-rafs', evil2], /escapes the root|\.\./);
    const link = join(dir, 'link.tar');
    await tarOf(link, [
      ['f', TarType.FILE],
      ['h', TarType.HARDLINK, '../f'],
    ]);
    await expectFail(['--type', 'tar-rafs', link], /escapes the root|\.\.|hardlink/i);
    // absolute paths are taken relative to the root (as tar extraction does)
    const abs = join(dir, 'abs.tar');
    await tarOf(abs, [['/etc/x', TarType.FILE]]);
    const ok = await runBin('nydus-image', [
      'create',
      '--type',
      'tar-rafs',
      '-B',
      join(dir, 'abs.boot'),
      abs,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    // corrupt and truncated gzip
    const good = join(dir, 'good.tar');
    await tarOf(
      good,
      Array.from({ length: 50 }, (_, i) => [`f${i}`, TarType.FILE] as [string, number]),
    );
    execFileSync('sh', ['-c', `gzip -c ${good} > ${good}.gz`]);
    const gz = readFileSync(`${good}.gz`);
    const corrupt = Buffer.from(gz);
    for (let i = 20; i < corrupt.length - 10; i += 7) corrupt[i] = corrupt[i]! ^ 0x5a;
    writeFileSync(join(dir, 'corrupt.tar.gz'), corrupt);
    await expectFail(
      ['--type', 'targz-rafs', join(dir, 'corrupt.tar.gz')],
      /tar stream|gzip|header|invalid|incorrect/i,
    );
    writeFileSync(join(dir, 'trunc.tar.gz'), gz.subarray(0, Math.floor(gz.length / 2)));
    await expectFail(
      ['--type', 'targz-rafs', join(dir, 'trunc.tar.gz')],
      /tar stream|unexpected end|Truncated/i,
    );
    // usage errors
    await expectFail(['--compressor', 'lz5', dir], /Allowed choices are none, lz4_block, zstd/, 2);
    await expectFail(['--chunk-size', '0x3000', dir], /must be a power of two/);
    await expectFail(['--fs-version', '5', '--features', 'blob-toc', dir], /requires RAFS v6/);
    await expectFail(['--type', 'tar-rafs', dir], /is a directory/);
    await expectFail([join(dir, 'nope')], /Cannot access source/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an unreadable file fails the build cleanly (run as an unprivileged user)', (t) => {
  if (!needRoot(t)) return;
  const dir = tmp();
  try {
    chmodSync(dir, 0o777);
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'secret'), 'x');
    chmodSync(join(src, 'secret'), 0o000);
    const out = join(dir, 'out');
    mkdirSync(out);
    chmodSync(out, 0o777);
    let stderr = '';
    try {
      execFileSync(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          binPath('nydus-image'),
          'create',
          '-B',
          join(out, 'boot'),
          '-D',
          out,
          src,
        ],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      assert.fail('the build must fail');
    } catch (e) {
      stderr = String((e as { stderr?: Buffer }).stderr ?? '');
    }
    assert.match(stderr, /^nydus-image: error: Cannot read ".*secret": EACCES/m);
    assert.deepEqual(readdirSync(out), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Layer trees in OCI form (whiteout files) for the builder. */
function makeLayers(dir: string): string[] {
  const l1 = join(dir, 'l1');
  const l2 = join(dir, 'l2');
  const l3 = join(dir, 'l3');
  for (const p of ['a/keep', 'a/f1', 'a/f2', 'b/g', 'b/sub/h', 'c/x']) {
    mkdirSync(join(l1, p, '..'), { recursive: true });
    writeFileSync(join(l1, p), `l1 ${p}\n`);
  }
  mkdirSync(join(l2, 'a'), { recursive: true });
  writeFileSync(join(l2, 'a', '.wh.f1'), '');
  mkdirSync(join(l2, 'b'), { recursive: true });
  writeFileSync(join(l2, 'b', '.wh..wh..opq'), '');
  writeFileSync(join(l2, 'b', 'new'), 'l2 b/new\n');
  writeFileSync(join(l2, 'a', 'f2'), 'l2 replaces f2\n');
  mkdirSync(join(l2, 'd'), { recursive: true });
  writeFileSync(join(l2, 'd', 'y'), 'l2 d/y\n');
  mkdirSync(join(l3, 'a', 'f1'), { recursive: true });
  writeFileSync(join(l3, 'a', 'f1', 'inside'), 'l3 re-created f1 as a dir\n');
  writeFileSync(join(l3, '.wh.c'), '');
  writeFileSync(join(l3, 'd', 'y').replace('/d/y', '/.wh.d'), '');
  mkdirSync(join(l3, 'e'));
  writeFileSync(join(l3, 'e', 'z'), 'l3 e/z\n');
  return [l1, l2, l3];
}

/** The same layers in overlayfs form for the kernel: 0/0 char devices and the opaque xattr. */
function toOverlayForm(layer: string, into: string): void {
  execFileSync('cp', ['-a', layer, into]);
  const find = execFileSync('find', [into, '-name', '.wh.*'], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .filter(Boolean);
  for (const p of find) {
    const name = p.slice(p.lastIndexOf('/') + 1);
    const parent = p.slice(0, p.lastIndexOf('/'));
    rmSync(p);
    if (name === '.wh..wh..opq') setAttributeSync(parent, 'trusted.overlay.opaque', 'y');
    else execFileSync('mknod', [join(parent, name.slice(4)), 'c', '0', '0']);
  }
}

test('layers: --parent-bootstrap chain and merge equal the kernel overlayfs view', async (t) => {
  if (!needRoot(t)) return;
  const dir = tmp();
  try {
    const layers = makeLayers(dir);
    const blobs = join(dir, 'blobs');
    mkdirSync(blobs);
    // chain: each layer on the previous bootstrap
    let parent: string | undefined;
    for (const [i, l] of layers.entries()) {
      const boot = join(dir, `chain${i}.boot`);
      const r = await runBin('nydus-image', [
        'create',
        ...(parent === undefined ? [] : ['--parent-bootstrap', parent]),
        '-B',
        boot,
        '-D',
        blobs,
        l,
      ]);
      assert.equal(r.code, 0, r.stderr);
      parent = boot;
    }
    // per-layer tar builds with whiteouts kept, merged (the nydusify way)
    const perLayer: string[] = [];
    for (const [i, l] of layers.entries()) {
      const tarFile = join(dir, `l${i}.tar`);
      execFileSync('tar', ['-C', l, '-cf', tarFile, '.']);
      const boot = join(dir, `layer${i}.boot`);
      const r = await runBin('nydus-image', [
        'create',
        '--type',
        'tar-rafs',
        '--whiteout-spec',
        'none',
        '-B',
        boot,
        '-D',
        blobs,
        tarFile,
      ]);
      assert.equal(r.code, 0, r.stderr);
      perLayer.push(boot);
    }
    const merged = join(dir, 'merged.boot');
    const m = await runBin('nydus-image', ['merge', '-B', merged, ...perLayer]);
    assert.equal(m.code, 0, m.stderr);
    // the kernel's view
    const ovl = layers.map((l, i) => {
      const o = join(dir, `ovl${i}`);
      toOverlayForm(l, o);
      return o;
    });
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    execFileSync('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${[...ovl].reverse().join(':')}`,
      mnt,
    ]);
    let kernel;
    try {
      kernel = snapshot(mnt, { skipRoot: true, mtimes: false });
      const names = [...kernel.keys()].map((k) => Buffer.from(k, 'hex').toString()).sort();
      assert.deepEqual(names, [
        '/a',
        '/a/f1',
        '/a/f1/inside',
        '/a/f2',
        '/a/keep',
        '/b',
        '/b/new',
        '/e',
        '/e/z',
      ]);
    } finally {
      execFileSync('umount', [mnt]);
    }
    for (const [name, boot] of [
      ['chain', parent!],
      ['merge', merged],
    ] as const) {
      await roundTrip(boot, blobs, join(dir, `${name}-root`));
      const got = snapshot(join(dir, `${name}-root`), { skipRoot: true, mtimes: false });
      // overlayfs reports directory link counts and xattrs of its own; compare what layers define
      const strip = (m: typeof got): typeof got => new Map([...m].map(([k, f]) => [k, { ...f, xattrs: {} }]));
      assert.deepEqual(diffSnapshots(strip(kernel), strip(got)), [], name);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('chunk dict: a second version stores only its new chunks', async () => {
  const dir = tmp();
  try {
    const v1 = join(dir, 'v1');
    mkdirSync(v1);
    const rnd = (n: number, seed: number): Buffer => {
      const b = Buffer.alloc(n);
      let x = seed;
      for (let i = 0; i < n; i += 4) {
        x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
        b.writeUInt32LE(x, i);
      }
      return b;
    };
    for (let i = 0; i < 6; i++) writeFileSync(join(v1, `f${i}`), rnd(2 * 1024 * 1024, i + 1));
    const blobs = join(dir, 'blobs');
    mkdirSync(blobs);
    const r1 = await runBin('nydus-image', [
      'create',
      '--chunk-size',
      '0x40000',
      '-B',
      join(dir, 'v1.boot'),
      '-D',
      blobs,
      v1,
    ]);
    assert.equal(r1.code, 0, r1.stderr);
    const v2 = join(dir, 'v2');
    execFileSync('cp', ['-a', v1, v2]);
    writeFileSync(
      join(v2, 'f0'),
      Buffer.concat([rnd(256 * 1024, 99), readFileSync(join(v1, 'f0')).subarray(256 * 1024)]),
    );
    writeFileSync(join(v2, 'new'), rnd(512 * 1024, 1000));
    const json = join(dir, 'v2.json');
    const r2 = await runBin('nydus-image', [
      'create',
      '--chunk-size',
      '0x40000',
      '--chunk-dict',
      `bootstrap=${join(dir, 'v1.boot')}`,
      '-B',
      join(dir, 'v2.boot'),
      '-D',
      blobs,
      '-J',
      json,
      v2,
    ]);
    assert.equal(r2.code, 0, r2.stderr);
    const out = JSON.parse(readFileSync(json, 'utf8')) as {
      blobs: string[];
      trace: { dedup_chunks: number; source_bytes: number; dedup_bytes: number };
    };
    // 48 chunks of 256 KiB in v1; v2 changes one and adds two
    assert.equal(out.blobs.length, 2, 'v2 references the v1 blob and its own');
    const info = await runBin('nydus-image', ['inspect', join(dir, 'v2.boot'), '-R', 'blobs']);
    const table = JSON.parse(info.stdout) as { blob_id: string; decompressed_size: number }[];
    assert.equal(table[1]!.decompressed_size, 3 * 256 * 1024, 'only the 3 new chunks are stored');
    assert.equal(out.trace.dedup_chunks, 47);
    const saved = out.trace.dedup_bytes / out.trace.source_bytes;
    process.stderr.write(`chunk dict dedup: ${(saved * 100).toFixed(1)}% of v2's data came from v1\n`);
    assert.ok(saved > 0.9);
    const chk = await runBin('nydus-image', ['check', join(dir, 'v2.boot'), '-D', blobs]);
    assert.equal(chk.code, 0, chk.stderr);
    await roundTrip(join(dir, 'v2.boot'), blobs, join(dir, 'v2-root'));
    assert.deepEqual(
      diffSnapshots(snapshot(v2, { skipRoot: true }), snapshot(join(dir, 'v2-root'), { skipRoot: true })),
      [],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tar file: large entries read by the workers from the file give the bytes of the same tar streamed', async () => {
  const dir = tmp();
  try {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'd'), { recursive: true });
    // Sizes around the hand-off threshold (64 KiB) and the chunk size (1 MiB), and data that
    // compresses and data that does not.
    const prng = (n: number, seed: number): Buffer => {
      const b = Buffer.alloc(n);
      let x = seed;
      for (let i = 0; i < n; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        b[i] = x >>> 24;
      }
      return b;
    };
    writeFileSync(join(src, 'random-2.5m'), prng(2.5 * 1024 * 1024, 1));
    writeFileSync(join(src, 'text-1m'), Buffer.alloc(1024 * 1024, 'line of text\n'));
    writeFileSync(join(src, 'd', 'just-over'), prng(64 * 1024 + 1, 2));
    writeFileSync(join(src, 'd', 'just-under'), prng(64 * 1024 - 1, 3));
    writeFileSync(join(src, 'd', 'small'), 'small');
    writeFileSync(join(src, 'empty'), '');
    execFileSync('ln', [join(src, 'random-2.5m'), join(src, 'd', 'hardlink')]);
    const tarFile = join(dir, 'src.tar');
    execFileSync('tar', ['--format=gnu', '--numeric-owner', '-C', src, '-cf', tarFile, '.']);
    // The same file appended again: a later entry replaces an earlier one.
    execFileSync('tar', ['--format=gnu', '--numeric-owner', '-C', src, '-rf', tarFile, './text-1m']);
    const fromFile = join(dir, 'file');
    const fromPipe = join(dir, 'pipe');
    mkdirSync(fromFile);
    mkdirSync(fromPipe);
    const r = await runBin('nydus-image', [
      'create',
      '--type',
      'tar-rafs',
      '-B',
      join(fromFile, 'boot'),
      '-D',
      fromFile,
      tarFile,
    ]);
    assert.equal(r.code, 0, r.stderr);
    execFileSync(
      'sh',
      [
        '-c',
        `cat ${tarFile} | ${process.execPath} ${binPath('nydus-image')} create --type tar-rafs -B ${join(fromPipe, 'boot')} -D ${fromPipe} /dev/stdin`,
      ],
      { stdio: 'ignore' },
    );
    const blobOf = (d: string): string => readdirSync(d).find((n) => /^[0-9a-f]{64}$/.test(n)) ?? 'none';
    assert.equal(blobOf(fromFile), blobOf(fromPipe));
    assert.ok(
      readFileSync(join(fromFile, blobOf(fromFile))).equals(readFileSync(join(fromPipe, blobOf(fromPipe)))),
      'blob',
    );
    assert.ok(readFileSync(join(fromFile, 'boot')).equals(readFileSync(join(fromPipe, 'boot'))), 'bootstrap');
    // A FIFO named on the command line: opened once (a second open would leave its writer
    // without a reader for a moment, and kill it with SIGPIPE).
    const fifo = join(dir, 'fifo');
    const fromFifo = join(dir, 'fifo-out');
    mkdirSync(fromFifo);
    execFileSync('mkfifo', [fifo]);
    execFileSync(
      'sh',
      [
        '-c',
        `cat ${tarFile} > ${fifo} & ${process.execPath} ${binPath('nydus-image')} create --type tar-rafs -B ${join(fromFifo, 'boot')} -D ${fromFifo} ${fifo}; r=$?; wait $! || exit 9; exit $r`,
      ],
      { stdio: 'ignore' },
    );
    assert.equal(blobOf(fromFifo), blobOf(fromFile));
    const st = await runBin('nydus-image', ['check', '-B', join(fromFile, 'boot'), '-D', fromFile]);
    assert.equal(st.code, 0, st.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
