import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { NydusError } from '../../src/errors/errors.js';
import { NydusStore, type DaemonRecord, type InstanceRecord } from '../../src/snapshotter/store.js';
import { PROJECT_ROOT } from '../helpers/fixtures.js';

/**
 * `<root>/nydus.db`: the daemons the snapshotter started and the RAFS instances they serve,
 * surviving a restart (and a crash) of the snapshotter.
 */

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function open(t: TestContext, path: string): NydusStore {
  const s = NydusStore.open(path);
  let closed = false;
  const close = s.close.bind(s);
  s.close = () => {
    if (!closed) close();
    closed = true;
  };
  t.after(() => s.close());
  return s;
}

const daemon = (id: string, extra: Partial<DaemonRecord> = {}): DaemonRecord => ({
  id,
  mode: 'dedicated',
  pid: 0,
  apiSock: `/run/nydus/${id}/api.sock`,
  mountpoint: `/var/lib/nydus/mnt/${id}`,
  command: ['/usr/bin/nydusd', '--config', `/var/lib/nydus/config/${id}.json`, '--id', id],
  logFile: `/var/lib/nydus/logs/${id}/nydusd.log`,
  startedAt: 1_700_000_000_000,
  ...extra,
});

const instance = (
  snapshotId: string,
  daemonId: string,
  extra: Partial<InstanceRecord> = {},
): InstanceRecord => ({
  snapshotId,
  daemonId,
  imageRef: `127.0.0.1:5000/app:${snapshotId}`,
  bootstrap: `/var/lib/nydus/snapshots/${snapshotId}/fs/image/image.boot`,
  mountpoint: `/var/lib/nydus/mnt/${daemonId}/${snapshotId}`,
  configPath: `/var/lib/nydus/config/${daemonId}.json`,
  ...extra,
});

function thrown(fn: () => unknown): NydusError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof NydusError, `expected a NydusError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected an error');
}

test('daemons: put, list in id order, update in place, delete', (t) => {
  const s = open(t, join(tempDir(t), 'nydus.db'));
  assert.deepEqual(s.daemons(), []);
  const b = daemon('b', { mode: 'shared', supervisor: '/run/nydus/b/supervisor.sock' });
  const a = daemon('a');
  s.putDaemon(b);
  s.putDaemon(a);
  assert.deepEqual(s.daemons(), [a, b]);
  // Optional fields round-trip as absent, not as null or undefined keys.
  assert.equal('supervisor' in s.daemons()[0]!, false);

  const a2 = { ...a, pid: 4242, startedAt: a.startedAt + 1 };
  s.putDaemon(a2);
  assert.deepEqual(s.daemons(), [a2, b]);

  s.deleteDaemon('a');
  assert.deepEqual(s.daemons(), [b]);
  s.deleteDaemon('a'); // absent: nothing happens
  s.deleteDaemon('nope');
  assert.deepEqual(s.daemons(), [b]);
});

test('instances: put, get, list (all or by daemon), update, delete', (t) => {
  const s = open(t, join(tempDir(t), 'nydus.db'));
  s.putDaemon(daemon('d1'));
  s.putDaemon(daemon('d2', { mode: 'shared' }));
  const i3 = instance('30', 'd2', { pseudoPath: '/30' });
  const i1 = instance('10', 'd1');
  const i2 = instance('20', 'd2', { pseudoPath: '/20' });
  for (const i of [i3, i1, i2]) s.putInstance(i);

  assert.deepEqual(s.instances(), [i1, i2, i3]);
  assert.deepEqual(s.instances('d2'), [i2, i3]);
  assert.deepEqual(s.instances('d1'), [i1]);
  assert.deepEqual(s.instances('none'), []);
  assert.deepEqual(s.instance('20'), i2);
  assert.equal(s.instance('99'), undefined);
  assert.equal('pseudoPath' in s.instance('10')!, false);

  const i1b = { ...i1, imageRef: '127.0.0.1:5000/app:new' };
  s.putInstance(i1b);
  assert.deepEqual(s.instance('10'), i1b);

  s.deleteInstance('20');
  s.deleteInstance('20');
  assert.deepEqual(s.instances(), [i1b, i3]);
});

test('deleteDaemon removes its instances, and only its own', (t) => {
  const s = open(t, join(tempDir(t), 'nydus.db'));
  s.putDaemon(daemon('d1'));
  s.putDaemon(daemon('d2'));
  s.putInstance(instance('1', 'd1'));
  s.putInstance(instance('2', 'd1'));
  s.putInstance(instance('3', 'd2'));
  // An instance moved to another daemon goes with the new one.
  const moved = instance('4', 'd2');
  s.putInstance(instance('4', 'd1'));
  s.putInstance(moved);
  assert.deepEqual(
    s.instances('d1').map((i) => i.snapshotId),
    ['1', '2'],
  );

  s.deleteDaemon('d1');
  assert.deepEqual(
    s.daemons().map((d) => d.id),
    ['d2'],
  );
  assert.deepEqual(s.instances(), [instance('3', 'd2'), moved]);
  assert.equal(s.instance('1'), undefined);
});

test('records persist across close and reopen', (t) => {
  const path = join(tempDir(t), 'nydus.db');
  const s = open(t, path);
  const d = daemon('d1', { pid: 77, supervisor: '/run/s.sock' });
  const i = instance('5', 'd1', { pseudoPath: '/5' });
  s.putDaemon(d);
  s.putInstance(i);
  s.close();

  const again = open(t, path);
  assert.deepEqual(again.daemons(), [d]);
  assert.deepEqual(again.instances(), [i]);
  again.deleteInstance('5');
  again.close();
  const third = open(t, path);
  assert.deepEqual(third.instances(), []);
  assert.deepEqual(third.daemons(), [d]);
});

test('records written just before the process is killed are there after a restart', (t) => {
  const path = join(tempDir(t), 'nydus.db');
  const storeJs = pathToFileURL(join(PROJECT_ROOT, 'dist', 'src', 'snapshotter', 'store.js')).href;
  const d = daemon('crash', { pid: 1234 });
  const i = instance('9', 'crash');
  const script = `
    const { NydusStore } = await import(${JSON.stringify(storeJs)});
    const s = NydusStore.open(${JSON.stringify(path)});
    s.putDaemon(${JSON.stringify(d)});
    s.putInstance(${JSON.stringify(i)});
    process.kill(process.pid, 'SIGKILL');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    timeout: 30_000,
    encoding: 'utf8',
  });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  const s = open(t, path);
  assert.deepEqual(s.daemons(), [d]);
  assert.deepEqual(s.instances(), [i]);
});

test('a database with a newer schema is refused with ERR_UNSUPPORTED and left as it was', (t) => {
  const path = join(tempDir(t), 'nydus.db');
  const s = open(t, path);
  s.putDaemon(daemon('d1'));
  s.close();
  const db = new Database(path);
  db.prepare("UPDATE meta SET value = '2' WHERE key = 'schema'").run();
  db.close();

  const e = thrown(() => NydusStore.open(path));
  assert.equal(e.code, 'ERR_UNSUPPORTED');
  assert.ok(e.message.includes(`"${path}"`), e.message);
  assert.match(e.message, /schema 2, newer than this snapshotter's 1/);

  const check = new Database(path, { readonly: true });
  t.after(() => check.close());
  assert.deepEqual(check.prepare("SELECT value FROM meta WHERE key = 'schema'").get(), { value: '2' });
  assert.equal((check.prepare('SELECT count(*) AS n FROM daemons').get() as { n: number }).n, 1);
});

test('a fresh database records schema 1; the same schema opens', (t) => {
  const path = join(tempDir(t), 'nydus.db');
  open(t, path).close();
  const db = new Database(path, { readonly: true });
  assert.deepEqual(db.prepare("SELECT value FROM meta WHERE key = 'schema'").get(), { value: '1' });
  db.close();
  open(t, path).close();
});

/** Descriptors of this process open on `path`. */
function fdsOn(path: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

test('a file that is not a database, or a missing directory, is ERR_IO naming the path', (t) => {
  const dir = tempDir(t);
  const junk = join(dir, 'nydus.db');
  writeFileSync(junk, Buffer.alloc(8192, 0x5a));
  const e = thrown(() => NydusStore.open(junk));
  assert.equal(e.code, 'ERR_IO');
  assert.ok(e.message.includes(`"${junk}"`), e.message);

  const missing = join(dir, 'no', 'such', 'dir', 'nydus.db');
  const e2 = thrown(() => NydusStore.open(missing));
  assert.equal(e2.code, 'ERR_IO');
  assert.ok(e2.message.includes(`"${missing}"`), e2.message);
});

test('a refused open leaves no file descriptor open on the database', (t) => {
  const dir = tempDir(t);
  const newer = join(dir, 'newer.db');
  open(t, newer).close();
  const db = new Database(newer);
  db.prepare("UPDATE meta SET value = '9' WHERE key = 'schema'").run();
  db.close();
  assert.throws(() => NydusStore.open(newer));
  assert.equal(fdsOn(newer), 0, 'newer schema');

  const junk = join(dir, 'junk.db');
  writeFileSync(junk, Buffer.alloc(8192, 0x5a));
  assert.throws(() => NydusStore.open(junk));
  assert.equal(fdsOn(junk), 0, 'not a database');
});
