import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Bootstrap } from '../../src/format/model.js';
import { loadBootstrapFile } from '../../src/rafs/open.js';
import { canMap, mapFile } from '../../src/util/mmap.js';
import { FIXTURE, upstreamFixture } from '../helpers/fixtures.js';

test('mapFile: a Buffer over the file; writes to it stay private to the process', (t) => {
  if (!canMap()) return t.skip('mmap through koffi is not available here');
  const dir = mkdtempSync(join(tmpdir(), 'nydus-map-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'f');
  const data = Buffer.alloc(3 * 4096 + 100);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  writeFileSync(path, data);
  const fd = openSync(path, 'r');
  const buf = mapFile(fd, data.length);
  closeSync(fd);
  assert.ok(buf !== null);
  assert.equal(buf.length, data.length);
  assert.ok(buf.equals(data));
  buf[5] = buf[5]! ^ 0xff;
  assert.ok(readFileSync(path).equals(data), 'the file is unchanged');
  assert.equal(mapFile(-1, 10), null, 'a bad fd gives null, not a throw');
  assert.equal(mapFile(0, 0), null, 'nothing to map for an empty range');
});

/** What a reader sees of a bootstrap: its blobs and every inode's attributes and entries. */
function walk(b: Bootstrap): unknown[] {
  const out: unknown[] = [b.blobs];
  const stack = [b.rootIno];
  const seen = new Set<number>();
  while (stack.length > 0) {
    const ino = stack.pop()!;
    if (seen.has(ino)) continue;
    seen.add(ino);
    out.push(b.getAttr(ino));
    if ((b.getAttr(ino).mode & 0o170000) === 0o040000) {
      for (const e of b.readdir(ino)) {
        out.push([ino, e.name.toString('hex'), e.ino]);
        stack.push(e.ino);
      }
    }
  }
  return out;
}

for (const [label, rel] of [
  ['v6', FIXTURE.v6Boot],
  ['v5', FIXTURE.v5Sha256],
] as const) {
  test(`loadBootstrapFile { map: true } (${label}): mapped, and the same image as read into memory`, async (t) => {
    const boot = upstreamFixture(t, rel);
    if (boot === undefined) return;
    const read = await loadBootstrapFile(boot);
    assert.equal(read.mapped, undefined);
    const mapped = await loadBootstrapFile(boot, { map: true });
    assert.equal(mapped.mapped, canMap() ? true : undefined);
    mapped.bootstrap.validate();
    assert.deepEqual(walk(mapped.bootstrap), walk(read.bootstrap));
  });
}

test('loadBootstrapFile { map: true }: bad input still gives the same clear errors', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-map-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const empty = join(dir, 'empty');
  writeFileSync(empty, '');
  await assert.rejects(loadBootstrapFile(empty, { map: true }), /is empty, not a RAFS bootstrap/);
  const junk = join(dir, 'junk');
  writeFileSync(junk, Buffer.alloc(8192, 1));
  await assert.rejects(loadBootstrapFile(junk, { map: true }), /neither a RAFS bootstrap nor a data blob/);
  // A v6 superblock magic over a file too short for its tables: a format error, not a crash.
  const short = Buffer.alloc(2048);
  short.writeUInt32LE(0xe0f5e1e2, 1024);
  const cut = join(dir, 'cut');
  writeFileSync(cut, short);
  await assert.rejects(loadBootstrapFile(cut, { map: true }), (e: Error) => e.name !== 'RangeError');
});

test('NYDUS_MMAP=0 turns mapping off', (t) => {
  const boot = upstreamFixture(t, FIXTURE.v6Boot);
  if (boot === undefined) return;
  const mod = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '../../src/rafs/open.js')).href;
  const script = `const { loadBootstrapFile } = await import(${JSON.stringify(mod)});
    const l = await loadBootstrapFile(${JSON.stringify(boot)}, { map: true });
    process.stdout.write(String(l.mapped === true));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, NYDUS_MMAP: '0' },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'false');
});
