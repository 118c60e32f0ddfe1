import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { NydusError, type ErrorCode } from '../../src/errors/errors.js';
import { parseFilter, parseFilters, snapshotFields } from '../../src/snapshotter/filters.js';
import { MAX_LABEL_SIZE, MetaStore, SCHEMA_VERSION } from '../../src/snapshotter/metastore.js';
import type { Info } from '../../src/snapshotter/types.js';

/**
 * The SQLite metastore against containerd's metastore rules (snapshots/storage/bolt.go and its
 * metastore_test.go): error codes, parent chains, commit, remove, update field paths, filters,
 * persistence, and a process killed in the middle of writing.
 */

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'metastore-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: TestContext, dir = tempDir(t)): { ms: MetaStore; path: string } {
  const path = join(dir, 'metadata.db');
  const ms = MetaStore.open(path);
  t.after(() => ms.close());
  return { ms, path };
}

/** The error code fn throws. */
function codeOf(fn: () => unknown): ErrorCode {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof NydusError, `expected a NydusError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected an error');
}

/** containerd's basePopulate: two committed layers, actives and views on top. */
function populate(ms: MetaStore): void {
  ms.createSnapshot('active', 'committed-tmp-1', '', {});
  ms.commitActive('committed-tmp-1', 'committed-1', { size: 1, inodes: 1 }, {});
  ms.createSnapshot('active', 'committed-tmp-2', 'committed-1', {});
  ms.commitActive('committed-tmp-2', 'committed-2', { size: 2, inodes: 2 }, {});
  ms.createSnapshot('active', 'active-1', '', {});
  ms.createSnapshot('active', 'active-2', 'committed-1', {});
  ms.createSnapshot('active', 'active-3', 'committed-2', {});
  ms.createSnapshot('view', 'view-1', '', {});
  ms.createSnapshot('view', 'view-2', 'committed-2', {});
}

const BASE: Record<string, { parent: string; kind: Info['kind'] }> = {
  'committed-1': { parent: '', kind: 'committed' },
  'committed-2': { parent: 'committed-1', kind: 'committed' },
  'active-1': { parent: '', kind: 'active' },
  'active-2': { parent: 'committed-1', kind: 'active' },
  'active-3': { parent: 'committed-2', kind: 'active' },
  'view-1': { parent: '', kind: 'view' },
  'view-2': { parent: 'committed-2', kind: 'view' },
};

function names(ms: MetaStore, filters: string[]): string[] {
  const out: string[] = [];
  ms.walk((i) => out.push(i.name), filters);
  return out;
}

function near(d: Date, ms = 30_000): boolean {
  return Math.abs(d.getTime() - Date.now()) < ms;
}

test('create, stat and walk the populated store as containerd does (ids are decimal strings, parents nearest first)', (t) => {
  const { ms } = openStore(t);
  populate(ms);
  for (const [name, want] of Object.entries(BASE)) {
    const { id, info } = ms.getInfo(name);
    assert.match(id, /^[1-9][0-9]*$/);
    assert.equal(info.name, name);
    assert.equal(info.parent, want.parent);
    assert.equal(info.kind, want.kind);
    assert.deepEqual(info.labels, {});
    assert.ok(near(info.created) && near(info.updated));
  }
  assert.deepEqual(names(ms, []), Object.keys(BASE).sort());

  const c1 = ms.getInfo('committed-1').id;
  const c2 = ms.getInfo('committed-2').id;
  const a3 = ms.getSnapshot('active-3');
  assert.deepEqual(a3, { id: ms.getInfo('active-3').id, kind: 'active', parentIds: [c2, c1] });
  assert.deepEqual(ms.getSnapshot('view-1').parentIds, []);
  assert.equal(ms.getSnapshot('view-2').kind, 'view');
  assert.deepEqual(
    ms.chain('active-3').map((c) => [c.id, c.info.name]),
    [
      [a3.id, 'active-3'],
      [c2, 'committed-2'],
      [c1, 'committed-1'],
    ],
  );
  assert.deepEqual(
    ms.chain('committed-1').map((c) => c.info.name),
    ['committed-1'],
  );
  const ids = ms.ids();
  assert.equal(ids.size, 7);
  assert.equal(ids.get(c2), 'committed-2');
  assert.equal(new Set(ids.keys()).size, 7);
  assert.deepEqual(ms.getInfo('committed-2').usage, { size: 2, inodes: 2 });
  assert.deepEqual(ms.getInfo('active-1').usage, { size: 0, inodes: 0 });
});

test('every error code of containerd metastore', (t) => {
  const { ms } = openStore(t);
  populate(ms);
  // create
  assert.equal(
    codeOf(() => ms.createSnapshot('active', '', '', {})),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('committed' as 'active', 'x', '', {})),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('active', 'active-1', '', {})),
    'ERR_ALREADY_EXISTS',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('view', 'committed-1', '', {})),
    'ERR_ALREADY_EXISTS',
  );
  assert.throws(
    () => ms.createSnapshot('active', 'active-1', '', {}),
    (e: NydusError) => e.message === 'snapshot "active-1" already exists',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('active', 'n', 'no-such-parent', {})),
    'ERR_NOT_FOUND',
  );
  // containerd's CreateSnapshot: a parent that is not committed is InvalidArgument.
  assert.equal(
    codeOf(() => ms.createSnapshot('active', 'n', 'active-1', {})),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('view', 'n', 'view-1', {})),
    'ERR_INVALID_ARG',
  );
  // lookups
  assert.equal(
    codeOf(() => ms.getInfo('active-not-exist')),
    'ERR_NOT_FOUND',
  );
  assert.equal(
    codeOf(() => ms.getSnapshot('active-not-exist')),
    'ERR_NOT_FOUND',
  );
  assert.equal(
    codeOf(() => ms.getSnapshot('committed-1')),
    'ERR_FAILED_PRECONDITION',
  );
  assert.equal(
    codeOf(() => ms.chain('nope')),
    'ERR_NOT_FOUND',
  );
  // commit
  const usage = { size: 0, inodes: 0 };
  assert.equal(
    codeOf(() => ms.commitActive('active-1', '', usage, {})),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.commitActive('active-1', 'committed-1', usage, {})),
    'ERR_ALREADY_EXISTS',
  );
  assert.equal(
    codeOf(() => ms.commitActive('active-1', 'active-2', usage, {})),
    'ERR_ALREADY_EXISTS',
  );
  assert.equal(
    codeOf(() => ms.commitActive('active-not-exist', 'c', usage, {})),
    'ERR_NOT_FOUND',
  );
  assert.equal(
    codeOf(() => ms.commitActive('view-1', 'c', usage, {})),
    'ERR_FAILED_PRECONDITION',
  );
  assert.equal(
    codeOf(() => ms.commitActive('committed-1', 'c', usage, {})),
    'ERR_FAILED_PRECONDITION',
  );
  // remove
  assert.equal(
    codeOf(() => ms.remove('active-not-exist')),
    'ERR_NOT_FOUND',
  );
  assert.equal(
    codeOf(() => ms.remove('committed-1')),
    'ERR_FAILED_PRECONDITION',
  );
  assert.equal(
    codeOf(() => ms.remove('committed-2')),
    'ERR_FAILED_PRECONDITION',
  );
  // update
  const info = ms.getInfo('active-1').info;
  assert.equal(
    codeOf(() => ms.updateInfo({ ...info, name: 'nope' }, [])),
    'ERR_NOT_FOUND',
  );
  assert.equal(
    codeOf(() => ms.updateInfo(info, ['parent'])),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.updateInfo(info, ['labels.a', 'kind'])),
    'ERR_INVALID_ARG',
  );
  // walk
  assert.equal(
    codeOf(() => ms.walk(() => undefined, ['name=='])),
    'ERR_INVALID_ARG',
  );
  // Nothing above changed the store.
  assert.deepEqual(names(ms, []), Object.keys(BASE).sort());
});

test('label size limit: key and value together at most 4096 bytes, on create, commit and update', (t) => {
  const { ms } = openStore(t);
  const key = 'k'.repeat(96);
  const fits = { [key]: 'v'.repeat(MAX_LABEL_SIZE - key.length) };
  const over = { [key]: 'v'.repeat(MAX_LABEL_SIZE - key.length + 1) };
  // Bytes, not characters: 2-byte characters count twice.
  const overUtf8 = { k: 'é'.repeat(2048) };
  ms.createSnapshot('active', 'a', '', fits);
  assert.deepEqual(ms.getInfo('a').info.labels, fits);
  assert.equal(
    codeOf(() => ms.createSnapshot('active', 'b', '', over)),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('active', 'b', '', overUtf8)),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.createSnapshot('active', 'b', '', { ['x'.repeat(4097)]: '' })),
    'ERR_INVALID_ARG',
  );
  assert.equal(
    codeOf(() => ms.commitActive('a', 'c', { size: 0, inodes: 0 }, over)),
    'ERR_INVALID_ARG',
  );
  const info = ms.getInfo('a').info;
  assert.equal(
    codeOf(() => ms.updateInfo({ ...info, labels: over }, [])),
    'ERR_INVALID_ARG',
  );
  assert.deepEqual(names(ms, []), ['a']);
  assert.deepEqual(ms.getInfo('a').info.labels, fits);
});

test('commit keeps the id, stores the usage, replaces the labels with the commit labels (as containerd does) and relinks the chain', async (t) => {
  const { ms } = openStore(t);
  const a = ms.createSnapshot('active', 'a', '', { keep: 'no', both: 'active' });
  const before = ms.getInfo('a').info;
  await new Promise((r) => setTimeout(r, 5));
  const id = ms.commitActive(
    'a',
    'base',
    { size: 4096, inodes: 3 },
    { both: 'commit', extra: 'x', empty: '' },
  );
  assert.equal(id, a.id);
  assert.equal(
    codeOf(() => ms.getInfo('a')),
    'ERR_NOT_FOUND',
  );
  const { id: cid, info, usage } = ms.getInfo('base');
  assert.equal(cid, a.id);
  assert.equal(info.kind, 'committed');
  assert.equal(info.parent, '');
  assert.deepEqual(info.labels, { both: 'commit', extra: 'x' });
  assert.deepEqual(usage, { size: 4096, inodes: 3 });
  assert.ok(info.created.getTime() > before.created.getTime());
  assert.equal(info.updated.getTime(), info.created.getTime());

  const b = ms.createSnapshot('active', 'b', 'base', {});
  assert.deepEqual(b.parentIds, [a.id]);
  assert.ok(Number(b.id) > Number(a.id));
  ms.commitActive('b', 'layer2', { size: 1, inodes: 1 }, {});
  const v = ms.createSnapshot('view', 'v', 'layer2', {});
  assert.deepEqual(v.parentIds, [b.id, a.id]);
  assert.equal(ms.getInfo('layer2').info.parent, 'base');
  assert.equal(ms.getInfo('v').info.parent, 'layer2');
  assert.deepEqual(names(ms, ['kind==committed']), ['base', 'layer2']);
});

test('remove: children block it, ids are never reused, ids() forgets the removed', (t) => {
  const { ms } = openStore(t);
  ms.createSnapshot('active', 'a', '', {});
  const base = ms.commitActive('a', 'base', { size: 0, inodes: 0 }, {});
  const child = ms.createSnapshot('active', 'child', 'base', {});
  assert.equal(
    codeOf(() => ms.remove('base')),
    'ERR_FAILED_PRECONDITION',
  );
  assert.deepEqual(ms.remove('child'), { id: child.id, kind: 'active' });
  assert.deepEqual(ms.remove('base'), { id: base, kind: 'committed' });
  assert.equal(ms.ids().size, 0);
  // The sequence goes on after the highest id was removed (bolt's NextSequence never goes back).
  const again = ms.createSnapshot('view', 'child', '', {});
  assert.ok(Number(again.id) > Number(child.id), `${again.id} > ${child.id}`);
  assert.deepEqual([...ms.ids()], [[again.id, 'child']]);
});

test('updateInfo: field paths [], labels, labels.<k>; only labels change; empty values delete', async (t) => {
  const { ms } = openStore(t);
  ms.createSnapshot('active', 'base-a', '', {});
  ms.commitActive('base-a', 'base', { size: 0, inodes: 0 }, {});
  ms.createSnapshot('active', 'k', 'base', { a: '1', b: '2', 'x.y': 'dotted' });
  const orig = ms.getInfo('k').info;
  await new Promise((r) => setTimeout(r, 5));

  // [] replaces all labels; other fields of info are ignored.
  let got = ms.updateInfo(
    { ...orig, parent: 'ignored', kind: 'view', created: new Date(0), labels: { c: '3', e: '' } },
    [],
  );
  assert.deepEqual(got.labels, { c: '3' });
  assert.equal(got.kind, 'active');
  assert.equal(got.parent, 'base');
  assert.equal(got.created.getTime(), orig.created.getTime());
  assert.ok(got.updated.getTime() > orig.updated.getTime());
  assert.deepEqual(ms.getInfo('k').info, got);

  got = ms.updateInfo({ ...orig, labels: { a: 'A', b: 'B' } }, ['labels']);
  assert.deepEqual(got.labels, { a: 'A', b: 'B' });

  // labels.<k> sets one key; a key absent from info.labels (or empty) is deleted.
  got = ms.updateInfo({ ...orig, labels: { a: 'new', z: 'not-listed', 'x.y': 'v' } }, [
    'labels.a',
    'labels.b',
    'labels.x.y',
    'labels.missing',
  ]);
  assert.deepEqual(got.labels, { a: 'new', 'x.y': 'v' });
  got = ms.updateInfo({ ...orig, labels: { a: '' } }, ['labels.a']);
  assert.deepEqual(got.labels, { 'x.y': 'v' });
  // A key named like an Object.prototype member is only a key.
  got = ms.updateInfo({ ...orig, labels: JSON.parse('{"__proto__":"p"}') as Record<string, string> }, [
    'labels.__proto__',
  ]);
  assert.deepEqual(Object.entries(got.labels).sort(), [
    ['__proto__', 'p'],
    ['x.y', 'v'],
  ]);
  assert.equal(ms.getInfo('k').info.labels['__proto__'], 'p');

  // An invalid path anywhere in the list changes nothing.
  const beforeBad = ms.getInfo('k').info;
  assert.equal(
    codeOf(() => ms.updateInfo({ ...orig, labels: { q: '1' } }, ['labels.q', 'name'])),
    'ERR_INVALID_ARG',
  );
  assert.deepEqual(ms.getInfo('k').info, beforeBad);
  // Committed snapshots can be updated too.
  assert.deepEqual(ms.updateInfo({ ...ms.getInfo('base').info, labels: { l: 'v' } }, []).labels, { l: 'v' });
});

test('labels with an empty value are never stored (containerd drops them)', (t) => {
  const { ms } = openStore(t);
  ms.createSnapshot('active', 'a', '', { a: '', b: 'x' });
  assert.deepEqual(ms.getInfo('a').info.labels, { b: 'x' });
  assert.deepEqual(names(ms, ['labels.a']), []);
});

test('walk filters: containerd syntax (==, !=, ~=, presence, quoting, AND with commas, OR across filters)', (t) => {
  const { ms } = openStore(t);
  populate(ms);
  const label = (key: string, labels: Record<string, string>): void => {
    ms.updateInfo({ ...ms.getInfo(key).info, labels }, []);
  };
  label('active-1', { 'containerd.io/snapshot.ref': 'sha256:abc', tier: 'gold' });
  label('active-2', { tier: 'silver', 'a.b.c': 'dots', 'sp ace': 'v w' });
  label('view-2', { tier: 'gold' });

  const cases: Array<[string[], string[]]> = [
    [[], Object.keys(BASE).sort()],
    [[''], Object.keys(BASE).sort()],
    [['name==active-1'], ['active-1']],
    [['name=="active-1"'], ['active-1']],
    [
      ['name!=active-1'],
      Object.keys(BASE)
        .filter((n) => n !== 'active-1')
        .sort(),
    ],
    [['kind==active'], ['active-1', 'active-2', 'active-3']],
    [['kind==view'], ['view-1', 'view-2']],
    [['kind==committed'], ['committed-1', 'committed-2']],
    [['parent==committed-2'], ['active-3', 'view-2']],
    [['parent==""'], ['active-1', 'committed-1', 'view-1']],
    [['parent'], Object.keys(BASE).sort()],
    [['labels."containerd.io/snapshot.ref"'], ['active-1']],
    [['labels."containerd.io/snapshot.ref"==sha256:abc'], ['active-1']],
    [['labels."containerd.io/snapshot.ref"==sha256:abd'], []],
    [['labels.tier==gold'], ['active-1', 'view-2']],
    [['labels."tier"==gold'], ['active-1', 'view-2']],
    [['labels.tier!=gold'], ['active-2', 'active-3', 'committed-1', 'committed-2', 'view-1']],
    [['labels.tier'], ['active-1', 'active-2', 'view-2']],
    [['labels.a.b.c==dots'], ['active-2']],
    [['labels."a.b.c"'], ['active-2']],
    [['labels."sp ace"=="v w"'], ['active-2']],
    [['labels.tier==gold,kind==view'], ['view-2']],
    [
      ['labels.tier==gold', 'kind==view'],
      ['active-1', 'view-1', 'view-2'],
    ],
    [['kind==active,labels.tier'], ['active-1', 'active-2']],
    [['name~=^active-[12]$'], ['active-1', 'active-2']],
    [['name~=/^view/'], ['view-1', 'view-2']],
    [['name~=|committed-\\x31|'], ['committed-1']],
    [['  name==view-1'], ['view-1']],
    [['name == view-1'], ['view-1']],
    [['name==a.b'], []],
    [['nosuchfield'], []],
    [['nosuchfield!=x'], Object.keys(BASE).sort()],
  ];
  for (const [filters, want] of cases) {
    assert.deepEqual(names(ms, filters), want, JSON.stringify(filters));
  }

  const malformed = [
    'name==',
    'name=x',
    '==x',
    'name===x',
    'name==x ',
    'name==x,',
    ',name==x',
    'name x',
    'labels."a',
    'labels.|a|',
    'name==/x/',
    'name=="a\\qb"',
    'name==.x',
    'labels.',
    'name==x\0',
  ];
  for (const f of malformed) {
    assert.equal(
      codeOf(() => ms.walk(() => undefined, [f])),
      'ERR_INVALID_ARG',
      f,
    );
    assert.equal(
      codeOf(() => ms.walk(() => undefined, ['name==x', f])),
      'ERR_INVALID_ARG',
      f,
    );
  }
});

test('filter parser: quoting and escapes as containerd unquotes them', () => {
  const info: Info = {
    name: 'n',
    parent: '',
    kind: 'active',
    labels: { q: 'a"b', nl: 'a\nb', u: 'é', t: 'tab\there' },
    created: new Date(),
    updated: new Date(),
  };
  const f = snapshotFields(info);
  assert.ok(parseFilter('labels.q=="a\\"b"')(f));
  assert.ok(parseFilter('labels.nl=="a\\nb"')(f));
  assert.ok(parseFilter('labels.u=="\\u00e9"')(f));
  assert.ok(parseFilter('labels.u=="\\303"') !== undefined);
  assert.ok(parseFilter('labels.t=="tab\\x09here"')(f));
  assert.ok(parseFilter('labels.t=="tab\\011here"')(f));
  assert.ok(parseFilter('labels."t"')(f));
  assert.ok(!parseFilter('labels')(f));
  assert.ok(parseFilters(['labels.none', 'name==n'])(f));
  assert.ok(!parseFilters(['labels.none', 'name==m'])(f));
  // An invalid regular expression matches nothing, as in containerd.
  assert.ok(!parseFilter('name~=(')(f));
  assert.throws(() => parseFilter('labels.q=="\\x4"'), NydusError);
  assert.throws(() => parseFilter('labels.q=="unterminated'), NydusError);
});

test('nested transactions join the outer one; a throw rolls everything back', (t) => {
  const { ms } = openStore(t);
  assert.throws(() =>
    ms.transaction(() => {
      ms.createSnapshot('active', 'a', '', {});
      ms.transaction(() => ms.createSnapshot('active', 'b', '', {}));
      throw new Error('boom');
    }),
  );
  assert.deepEqual(names(ms, []), []);
  const r = ms.transaction(() => {
    ms.createSnapshot('active', 'a', '', {});
    return ms.transaction(() => ms.commitActive('a', 'c', { size: 0, inodes: 0 }, {}));
  });
  assert.equal(r, ms.getInfo('c').id);
  // A failing call inside a transaction aborts the whole of it when not caught.
  assert.throws(() =>
    ms.transaction(() => {
      ms.createSnapshot('active', 'x', '', {});
      ms.createSnapshot('active', 'x', '', {});
    }),
  );
  assert.deepEqual(names(ms, []), ['c']);
});

test('persistence: close and reopen keeps snapshots, usage, labels, times and the id sequence; WAL; schema version', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'metadata.db');
  let ms = MetaStore.open(path);
  populate(ms);
  ms.updateInfo({ ...ms.getInfo('active-1').info, labels: { l: 'v' } }, []);
  const removed = ms.createSnapshot('view', 'gone', '', {});
  ms.remove('gone');
  const before = new Map<string, unknown>();
  ms.walk(
    (i) => before.set(i.name, { ...ms.getInfo(i.name), parents: ms.chain(i.name).map((c) => c.id) }),
    [],
  );
  assert.equal(ms.schemaVersion, SCHEMA_VERSION);
  ms.close();
  ms.close(); // twice is fine

  ms = MetaStore.open(path);
  t.after(() => ms.close());
  const after = new Map<string, unknown>();
  ms.walk(
    (i) => after.set(i.name, { ...ms.getInfo(i.name), parents: ms.chain(i.name).map((c) => c.id) }),
    [],
  );
  assert.deepEqual(after, before);
  assert.ok(Number(ms.createSnapshot('active', 'new', '', {}).id) > Number(removed.id));

  const raw = new Database(path, { readonly: true });
  try {
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
  } finally {
    raw.close();
  }
});

test('a database from a newer schema is refused, not touched', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'metadata.db');
  MetaStore.open(path).close();
  const raw = new Database(path);
  raw.prepare('UPDATE schema_version SET version = ?').run(SCHEMA_VERSION + 1);
  raw.close();
  assert.equal(
    codeOf(() => MetaStore.open(path)),
    'ERR_UNSUPPORTED',
  );
  const check = new Database(path, { readonly: true });
  try {
    assert.equal(check.prepare('SELECT version FROM schema_version').pluck().get(), SCHEMA_VERSION + 1);
  } finally {
    check.close();
  }
});

test('crash: a writer killed with SIGKILL mid-way leaves a consistent store with every acknowledged step', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'metadata.db');
  const moduleUrl = new URL('../../src/snapshotter/metastore.js', import.meta.url).href;
  // Each step is several transactions; the child reports a step only after all of them.
  const script = `
    import { writeSync } from 'node:fs';
    import { MetaStore } from ${JSON.stringify(moduleUrl)};
    const ms = MetaStore.open(${JSON.stringify(path)});
    for (let i = 0; ; i++) {
      ms.createSnapshot('active', 'a' + i, i === 0 ? '' : 'c' + (i - 1), { n: String(i) });
      ms.commitActive('a' + i, 'c' + i, { size: i, inodes: i }, { n: String(i) });
      ms.createSnapshot('view', 'v' + i, 'c' + i, { pad: 'x'.repeat(i % 1000) });
      if (i > 0) ms.remove('v' + (i - 1));
      writeSync(1, i + '\\n');
    }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let acked = -1;
  let buf = '';
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child made no progress in time: ${stderr}`)), 60_000);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) acked = Number(l);
      if (acked >= 300 && child.signalCode === null) {
        child.kill('SIGKILL');
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', () => {
      clearTimeout(timer);
      if (acked < 300) reject(new Error(`child exited early: ${stderr}`));
    });
  });
  await exited;
  assert.equal(child.signalCode, 'SIGKILL');
  // Lines read after the kill decision were acknowledged too.
  for (const l of buf.split('\n')) if (l !== '') acked = Math.max(acked, Number(l));

  const raw = new Database(path);
  try {
    assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(raw.pragma('foreign_key_check'), []);
  } finally {
    raw.close();
  }
  const ms = MetaStore.open(path);
  t.after(() => ms.close());
  const committed = names(ms, ['kind==committed']);
  const top = Math.max(...committed.map((n) => Number(n.slice(1))));
  assert.ok(top >= acked, `committed up to c${top}, acknowledged ${acked}`);
  assert.ok(top <= acked + 1);
  assert.equal(committed.length, top + 1);
  for (let i = 0; i <= top; i++) {
    const { info, usage } = ms.getInfo(`c${i}`);
    assert.equal(info.parent, i === 0 ? '' : `c${i - 1}`);
    assert.deepEqual(info.labels, { n: String(i) });
    assert.deepEqual(usage, { size: i, inodes: i });
  }
  assert.equal(ms.chain(`c${top}`).length, top + 1);
  // Actives: at most the one of an unfinished step.
  const actives = names(ms, ['kind==active']);
  assert.ok(
    actives.length === 0 || (actives.length === 1 && actives[0] === `a${top + 1}`),
    JSON.stringify(actives),
  );
  // Views: the last acknowledged one, maybe the next and the one before it (unfinished step).
  const views = names(ms, ['kind==view']).map((n) => Number(n.slice(1)));
  assert.ok(views.includes(acked) || views.includes(acked + 1), JSON.stringify(views));
  assert.ok(
    views.every((v) => v >= acked && v <= acked + 1),
    JSON.stringify(views),
  );
  // Every id maps to a readable snapshot, and the store keeps working.
  for (const [, name] of ms.ids()) ms.getInfo(name);
  const next = `a${top + 1}`;
  if (actives.length === 0) ms.createSnapshot('active', next, `c${top}`, {});
  ms.commitActive(next, `c${top + 1}`, { size: 0, inodes: 0 }, {});
  assert.equal(ms.chain(`c${top + 1}`).length, top + 2);
});
