import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { NydusError, type ErrorCode } from '../../src/errors/errors.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import {
  addSnapshotsService,
  createGrpcServer,
  LIST_BATCH,
  listenUnix,
  loadProto,
  toGrpcError,
  type GrpcServer,
} from '../../src/snapshotter/grpc.js';
import type { Info, Kind, Mount, Snapshotter, Usage } from '../../src/snapshotter/types.js';

/**
 * The real gRPC server on a temp unix socket, an in-memory Snapshotter behind it, and a
 * @grpc/grpc-js client built from our proto: what containerd's proxy plugin would send.
 */

interface Snap {
  info: Info;
  usage: Usage;
}

/** Test-only Snapshotter with containerd's metastore rules, enough to exercise every RPC. */
class MemorySnapshotter implements Snapshotter {
  readonly snaps = new Map<string, Snap>();
  cleanups = 0;
  lastFilters: string[] | undefined;
  lastUpdatePaths: string[] | undefined;
  /** Keys whose operations throw this instead. */
  readonly failures = new Map<string, unknown>();
  private clock = Date.UTC(2026, 0, 2, 3, 4, 5, 678);

  private now(): Date {
    this.clock += 1001;
    return new Date(this.clock);
  }

  private check(key: string): void {
    if (this.failures.has(key)) throw this.failures.get(key);
  }

  private get(key: string): Snap {
    this.check(key);
    const s = this.snaps.get(key);
    if (s === undefined) throw new NydusError('ERR_NOT_FOUND', `Snapshot "${key}" does not exist`);
    return s;
  }

  private mountsOf(s: Snap): Mount[] {
    const ro = s.info.kind === 'view';
    if (s.info.parent === '')
      return [{ type: 'bind', source: `/snaps/${s.info.name}`, options: [ro ? 'ro' : 'rw', 'rbind'] }];
    return [
      {
        type: 'overlay',
        source: 'overlay',
        options: [`lowerdir=/snaps/${s.info.parent}`, `upperdir=/snaps/${s.info.name}/fs`, 'index=off'],
      },
    ];
  }

  private create(kind: Kind, key: string, parent: string, labels: Record<string, string>): Mount[] {
    this.check(key);
    if (this.snaps.has(key)) throw new NydusError('ERR_ALREADY_EXISTS', `Snapshot "${key}" already exists`);
    if (parent !== '') {
      const p = this.get(parent);
      if (p.info.kind !== 'committed') {
        throw new NydusError('ERR_FAILED_PRECONDITION', `Parent "${parent}" is not committed`);
      }
    }
    const t = this.now();
    const s: Snap = {
      info: { name: key, parent, kind, labels: { ...labels }, created: t, updated: t },
      usage: { size: 0, inodes: 1 },
    };
    this.snaps.set(key, s);
    return this.mountsOf(s);
  }

  stat(key: string): Promise<Info> {
    return Promise.resolve({ ...this.get(key).info });
  }
  update(info: Info, fieldpaths: string[]): Promise<Info> {
    const s = this.get(info.name);
    this.lastUpdatePaths = fieldpaths;
    if (fieldpaths.length === 0 || fieldpaths.includes('labels')) s.info.labels = { ...info.labels };
    for (const p of fieldpaths) {
      if (p === 'labels') continue;
      if (!p.startsWith('labels.')) throw new NydusError('ERR_INVALID_ARG', `Cannot update field "${p}"`);
      const k = p.slice('labels.'.length);
      const v = info.labels[k];
      if (v === undefined) delete s.info.labels[k];
      else s.info.labels[k] = v;
    }
    s.info.updated = this.now();
    return Promise.resolve({ ...s.info });
  }
  usage(key: string): Promise<Usage> {
    return Promise.resolve(this.get(key).usage);
  }
  mounts(key: string): Promise<Mount[]> {
    const s = this.get(key);
    if (s.info.kind === 'committed')
      throw new NydusError('ERR_FAILED_PRECONDITION', `Snapshot "${key}" is committed`);
    return Promise.resolve(this.mountsOf(s));
  }
  prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return Promise.resolve(this.create('active', key, parent, labels));
  }
  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return Promise.resolve(this.create('view', key, parent, labels));
  }
  commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    const s = this.get(key);
    if (s.info.kind !== 'active')
      throw new NydusError('ERR_FAILED_PRECONDITION', `Snapshot "${key}" is not active`);
    if (this.snaps.has(name)) throw new NydusError('ERR_ALREADY_EXISTS', `Snapshot "${name}" already exists`);
    this.snaps.delete(key);
    const t = this.now();
    this.snaps.set(name, {
      info: { ...s.info, name, kind: 'committed', labels: { ...labels }, updated: t },
      usage: s.usage,
    });
    return Promise.resolve();
  }
  remove(key: string): Promise<void> {
    this.get(key);
    for (const s of this.snaps.values()) {
      if (s.info.parent === key)
        throw new NydusError('ERR_FAILED_PRECONDITION', `Snapshot "${key}" has children`);
    }
    this.snaps.delete(key);
    return Promise.resolve();
  }
  async walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void> {
    this.lastFilters = filters;
    const fail = this.failures.get('*walk*');
    let n = 0;
    for (const s of this.snaps.values()) {
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- whatever the test planted
      if (fail !== undefined && n++ === 150) throw fail;
      await fn({ ...s.info });
    }
  }
  cleanup(): Promise<void> {
    this.check('*cleanup*');
    this.cleanups++;
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

// ---- A client as containerd's proxy plugin, from our proto ----

type Call = (req: object, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

interface PbInfo {
  name: string;
  parent: string;
  kind: string;
  created_at: { seconds: number; nanos: number };
  updated_at: { seconds: number; nanos: number };
  labels: Record<string, string>;
}

class Client {
  readonly raw: grpc.Client & Record<string, Call>;
  constructor(address: string) {
    const pkg = loadProto('containerd/services/snapshots/v1/snapshots.proto');
    const ns = pkg['containerd'] as grpc.GrpcObject;
    const v1 = ((ns['services'] as grpc.GrpcObject)['snapshots'] as grpc.GrpcObject)['v1'] as grpc.GrpcObject;
    const Ctor = v1['Snapshots'] as grpc.ServiceClientConstructor;
    this.raw = new Ctor(`unix:${address}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 << 20,
    }) as grpc.Client & Record<string, Call>;
  }
  call<T>(method: string, req: object): Promise<T> {
    return new Promise((res, rej) => {
      const fn = this.raw[method] as Call;
      fn.call(this.raw, req, (err, out) => (err !== null ? rej(err) : res(out as T)));
    });
  }
  list(filters: string[]): Promise<PbInfo[][]> {
    return new Promise((res, rej) => {
      const batches: PbInfo[][] = [];
      const stream = (
        this.raw['List'] as unknown as (r: object) => grpc.ClientReadableStream<{ info: PbInfo[] }>
      ).call(this.raw, { snapshotter: 'nydus', filters });
      stream.on('data', (m: { info: PbInfo[] }) => batches.push(m.info));
      stream.on('error', rej);
      stream.on('end', () => res(batches));
    });
  }
  close(): void {
    this.raw.close();
  }
}

interface Fixture {
  dir: string;
  sn: MemorySnapshotter;
  srv: GrpcServer;
  client: Client;
  logs: string[];
}

function captureLogger(lines: string[]): Logger {
  return createLogger('debug', undefined, (l) => lines.push(l));
}

async function start(t: { after(fn: () => unknown): void }): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-grpc-'));
  const logs: string[] = [];
  const sn = new MemorySnapshotter();
  const server = createGrpcServer();
  addSnapshotsService(server, sn, captureLogger(logs));
  const srv = await listenUnix(server, join(dir, 'run', 'sub', 'snapshotter.sock'));
  const client = new Client(srv.address);
  t.after(async () => {
    client.close();
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, sn, srv, client, logs };
}

async function rejectsWith(p: Promise<unknown>, code: grpc.status, text: RegExp): Promise<void> {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, code, `code ${e.code} (${e.details})`);
    assert.match(e.details, text);
    return true;
  });
}

test('every RPC round-trips through the server', async (t) => {
  const { sn, client, logs } = await start(t);

  const prep = await client.call<{ mounts: unknown[] }>('Prepare', {
    snapshotter: 'ignored-name',
    key: 'extract-1',
    parent: '',
    labels: { 'containerd.io/snapshot.ref': 'sha256:aa' },
  });
  assert.deepEqual(prep.mounts, [
    { type: 'bind', source: '/snaps/extract-1', target: '', options: ['rw', 'rbind'] },
  ]);
  assert.deepEqual(sn.snaps.get('extract-1')?.info.labels, { 'containerd.io/snapshot.ref': 'sha256:aa' });

  await client.call('Commit', {
    snapshotter: 'nydus',
    name: 'layer-1',
    key: 'extract-1',
    labels: { a: 'b' },
  });
  assert.equal(sn.snaps.get('layer-1')?.info.kind, 'committed');

  const view = await client.call<{ mounts: unknown[] }>('View', {
    key: 'view-1',
    parent: 'layer-1',
    labels: {},
  });
  assert.deepEqual(view.mounts, [
    {
      type: 'overlay',
      source: 'overlay',
      target: '',
      options: ['lowerdir=/snaps/layer-1', 'upperdir=/snaps/view-1/fs', 'index=off'],
    },
  ]);
  const mounts = await client.call<{ mounts: unknown[] }>('Mounts', { key: 'view-1' });
  assert.deepEqual(mounts.mounts, view.mounts);

  const stat = await client.call<{ info: PbInfo }>('Stat', { key: 'layer-1' });
  const want = sn.snaps.get('layer-1')?.info as Info;
  assert.equal(stat.info.name, 'layer-1');
  assert.equal(stat.info.parent, '');
  assert.equal(stat.info.kind, 'COMMITTED');
  assert.deepEqual(stat.info.labels, { a: 'b' });
  // Timestamps keep the millisecond the snapshotter has.
  assert.equal(
    stat.info.created_at.seconds * 1000 + stat.info.created_at.nanos / 1e6,
    want.created.getTime(),
  );
  assert.equal(
    stat.info.updated_at.seconds * 1000 + stat.info.updated_at.nanos / 1e6,
    want.updated.getTime(),
  );
  assert.equal((await client.call<{ info: PbInfo }>('Stat', { key: 'view-1' })).info.kind, 'VIEW');
  await client.call('Prepare', { key: 'active-1', parent: 'layer-1' });
  assert.equal((await client.call<{ info: PbInfo }>('Stat', { key: 'active-1' })).info.kind, 'ACTIVE');

  const created = { seconds: 1700000000, nanos: 250_000_000 };
  const upd = await client.call<{ info: PbInfo }>('Update', {
    snapshotter: 'nydus',
    info: {
      name: 'layer-1',
      kind: 'COMMITTED',
      labels: { x: '1' },
      created_at: created,
      updated_at: created,
    },
    update_mask: { paths: ['labels.x', 'labels.a'] },
  });
  assert.deepEqual(sn.lastUpdatePaths, ['labels.x', 'labels.a']);
  assert.deepEqual(upd.info.labels, { x: '1' });
  assert.equal(upd.info.kind, 'COMMITTED');
  await client.call('Update', { info: { name: 'layer-1', labels: { y: '2' } } });
  assert.deepEqual(sn.lastUpdatePaths, [], 'no mask: no paths');
  assert.deepEqual(sn.snaps.get('layer-1')?.info.labels, { y: '2' });

  sn.snaps.get('active-1')!.usage = { size: 2 ** 40 + 3, inodes: 77 };
  assert.deepEqual(await client.call('Usage', { key: 'active-1' }), { size: 2 ** 40 + 3, inodes: 77 });

  const batches = await client.list(['kind==committed']);
  assert.deepEqual(sn.lastFilters, ['kind==committed']);
  assert.equal(batches.length, 1);
  assert.deepEqual(
    batches[0]?.map((i) => [i.name, i.kind, i.parent]),
    [
      ['layer-1', 'COMMITTED', ''],
      ['view-1', 'VIEW', 'layer-1'],
      ['active-1', 'ACTIVE', 'layer-1'],
    ],
  );

  await client.call('Remove', { key: 'view-1' });
  assert.equal(sn.snaps.has('view-1'), false);
  await client.call('Cleanup', { snapshotter: 'nydus' });
  assert.equal(sn.cleanups, 1);

  // Every RPC logs at debug level with its duration.
  for (const m of [
    'Prepare',
    'View',
    'Mounts',
    'Commit',
    'Remove',
    'Stat',
    'Update',
    'List',
    'Usage',
    'Cleanup',
  ]) {
    assert.ok(
      logs.some((l) => new RegExp(`DEBUG Snapshots\\.${m}\\b.* in [0-9.]+ ms`).test(l)),
      `debug line for ${m}`,
    );
  }
  assert.ok(logs.some((l) => l.includes('Snapshots.Prepare key="extract-1" parent="" done in')));
});

test('errors map to the status codes containerd understands', async (t) => {
  const { sn, client, logs } = await start(t);
  await client.call('Prepare', { key: 'a', parent: '' });

  await rejectsWith(
    client.call('Stat', { key: 'nope' }),
    grpc.status.NOT_FOUND,
    /^Snapshot "nope" does not exist$/,
  );
  await rejectsWith(
    client.call('Prepare', { key: 'a', parent: '' }),
    grpc.status.ALREADY_EXISTS,
    /already exists/,
  );
  await rejectsWith(
    client.call('Prepare', { key: 'b', parent: 'a' }),
    grpc.status.FAILED_PRECONDITION,
    /not committed/,
  );
  await rejectsWith(
    client.call('Update', { info: { name: 'a' }, update_mask: { paths: ['parent'] } }),
    grpc.status.INVALID_ARGUMENT,
    /Cannot update field "parent"/,
  );

  const cases: [ErrorCode, grpc.status][] = [
    ['ERR_UNSUPPORTED', grpc.status.UNIMPLEMENTED],
    ['ERR_AUTH', grpc.status.PERMISSION_DENIED],
    ['ERR_IO', grpc.status.UNKNOWN],
    ['ERR_NETWORK', grpc.status.UNKNOWN],
    ['ERR_FORMAT', grpc.status.UNKNOWN],
  ];
  for (const [code, status] of cases) {
    sn.failures.set('a', new NydusError(code, `Failed with ${code}`));
    await rejectsWith(client.call('Mounts', { key: 'a' }), status, new RegExp(`^Failed with ${code}$`));
  }

  // A bug (not a NydusError) is answered UNKNOWN with its message and logged with its stack.
  sn.failures.set('a', new TypeError('Cannot read properties of undefined'));
  await rejectsWith(
    client.call('Usage', { key: 'a' }),
    grpc.status.UNKNOWN,
    /^Cannot read properties of undefined$/,
  );
  assert.ok(
    logs.some((l) =>
      /ERROR Snapshots\.Usage key="a" failed .*TypeError: Cannot read properties[^]*at /.test(l),
    ),
  );
  sn.failures.set('*cleanup*', 'a thrown string');
  await rejectsWith(client.call('Cleanup', {}), grpc.status.UNKNOWN, /^a thrown string$/);

  // The server lives on.
  sn.failures.clear();
  assert.equal((await client.call<{ info: PbInfo }>('Stat', { key: 'a' })).info.name, 'a');

  // Failure inside a List stream: the batches before it, then the status.
  for (let i = 0; i < 200; i++) await client.call('Prepare', { key: `k${i}`, parent: '' });
  sn.failures.set('*walk*', new NydusError('ERR_IO', 'Disk on fire'));
  await rejectsWith(client.list([]), grpc.status.UNKNOWN, /^Disk on fire$/);
});

test('toGrpcError maps codes without a server', () => {
  const e = toGrpcError(new NydusError('ERR_NOT_FOUND', 'Gone'));
  assert.equal(e.code, grpc.status.NOT_FOUND);
  assert.equal(e.details, 'Gone');
  assert.equal(e.message, 'Gone');
  assert.equal(toGrpcError(new NydusError('ERR_ALREADY_EXISTS', 'x')).code, grpc.status.ALREADY_EXISTS);
  assert.equal(
    toGrpcError(new NydusError('ERR_FAILED_PRECONDITION', 'x')).code,
    grpc.status.FAILED_PRECONDITION,
  );
  assert.equal(toGrpcError(new NydusError('ERR_INVALID_ARG', 'x')).code, grpc.status.INVALID_ARGUMENT);
  assert.equal(toGrpcError(new NydusError('ERR_TIMEOUT', 'x')).code, grpc.status.UNKNOWN);
  assert.equal(toGrpcError(new RangeError('bad')).details, 'bad');
  assert.equal(toGrpcError(42).details, '42');
});

test('List streams more than 100 snapshots in batches of 100, in walk order', async (t) => {
  const { sn, client } = await start(t);
  const n = 2 * LIST_BATCH + 37;
  for (let i = 0; i < n; i++) {
    await client.call('Prepare', {
      key: `snap-${String(i).padStart(4, '0')}`,
      parent: '',
      labels: { i: String(i) },
    });
  }
  const batches = await client.list([]);
  assert.deepEqual(
    batches.map((b) => b.length),
    [100, 100, 37],
  );
  const names = batches.flat().map((i) => i.name);
  assert.deepEqual(names, [...sn.snaps.keys()]);
  assert.equal(batches.flat()[150]?.labels['i'], '150');

  const none = await client.list([]).then(() => undefined);
  assert.equal(none, undefined);
  sn.snaps.clear();
  assert.deepEqual(await client.list([]), [], 'nothing to list: no message at all');
});

test('a client that cancels List mid-stream stops the walk; the server carries on', async (t) => {
  const { sn, client, logs } = await start(t);
  const big = 'v'.repeat(4096);
  for (let i = 0; i < 3000; i++) {
    const k = `s${i}`;
    const at = new Date(0);
    sn.snaps.set(k, {
      info: { name: k, parent: '', kind: 'committed', labels: { big }, created: at, updated: at },
      usage: { size: 0, inodes: 0 },
    });
  }
  let visited = 0;
  const walk = sn.walk.bind(sn);
  sn.walk = (fn, filters) =>
    walk(async (info) => {
      visited++;
      await fn(info);
    }, filters);
  const stream = (
    client.raw['List'] as unknown as (r: object) => grpc.ClientReadableStream<{ info: PbInfo[] }>
  ).call(client.raw, { filters: [] });
  const first = await new Promise<number>((res, rej) => {
    stream.once('data', (m: { info: PbInfo[] }) => res(m.info.length));
    stream.once('error', rej);
  });
  assert.equal(first, LIST_BATCH);
  stream.on('error', () => {});
  stream.cancel();
  const deadline = Date.now() + 5000;
  while (!logs.some((l) => l.includes('Snapshots.List filters=[] cancelled by the client'))) {
    assert.ok(Date.now() < deadline, `no cancel log line; visited ${visited}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(visited < 3000, `the walk stopped early (visited ${visited})`);
  assert.equal((await client.call<{ info: PbInfo }>('Stat', { key: 's1' })).info.name, 's1');
});

test('listenUnix: parents made 0700, socket 0660, stale socket replaced, regular file refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-grpc-listen-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  // A stale socket: something bound it and went away without removing the file.
  const stale = join(dir, 'new', 'deeper', 'grpc.sock');
  mkdirSync(join(dir, 'new', 'deeper'), { recursive: true });
  const old: NetServer = createServer();
  await new Promise<void>((res) => old.listen(stale, res));
  // Close without unlinking: keep the file by renaming it aside and back.
  renameSync(stale, `${stale}.keep`);
  await new Promise<void>((res) => old.close(() => res()));
  renameSync(`${stale}.keep`, stale);
  assert.ok(lstatSync(stale).isSocket());

  const server = createGrpcServer();
  addSnapshotsService(server, new MemorySnapshotter(), captureLogger([]));
  const srv = await listenUnix(server, stale, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
  t.after(() => srv.close());
  assert.equal(srv.address, stale);
  assert.equal(statSync(stale).mode & 0o777, 0o660);
  const client = new Client(stale);
  await client.call('Prepare', { key: 'k', parent: '' });
  client.close();

  // New parents get 0700.
  const fresh = join(dir, 'made', 'here', 'grpc.sock');
  const server2 = createGrpcServer();
  addSnapshotsService(server2, new MemorySnapshotter(), captureLogger([]));
  const srv2 = await listenUnix(server2, fresh);
  assert.equal(statSync(join(dir, 'made')).mode & 0o777, 0o700);
  assert.equal(statSync(join(dir, 'made', 'here')).mode & 0o777, 0o700);
  await srv2.close();
  assert.throws(() => lstatSync(fresh), /ENOENT/, 'close removes the socket');
  await srv2.close();

  // A regular file at the path is not ours to remove.
  const file = join(dir, 'not-a-socket');
  writeFileSync(file, 'precious');
  const server3 = createGrpcServer();
  await assert.rejects(
    listenUnix(server3, file),
    (e: NydusError) =>
      e.code === 'ERR_INVALID_ARG' && /"[^"]*not-a-socket" exists and is not a socket/.test(e.message),
  );
  assert.ok(lstatSync(file).isFile());
  server3.forceShutdown();

  // A path longer than sun_path is refused up front.
  await assert.rejects(listenUnix(createGrpcServer(), join(dir, 'x'.repeat(120))), (e: NydusError) => {
    return e.code === 'ERR_INVALID_ARG' && /longer than the 107-byte limit/.test(e.message);
  });
});
