import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import protobuf from 'protobufjs';
import { needRoot } from '../helpers/env.js';
import { IN_CI, PROJECT_ROOT } from '../helpers/fixtures.js';

/**
 * The proof that our .proto files (proto/containerd/...) put the same bytes on the wire as
 * containerd's: both are loaded with protobufjs and every message, field (name, number, type,
 * label, map key), enum value and rpc (request, response, streaming) must be identical.
 *
 * containerd's files come from Debian's golang-github-containerd-containerd-dev (the version
 * matching the containerd installed here): from the installed package, an extraction under
 * /tmp/ctdproto, or downloaded (`apt-get download` + `dpkg -x`, as root) into a temp dir.
 */

const PKG = 'golang-github-containerd-containerd-dev';
const API = 'github.com/containerd/containerd/api';
const SNAPSHOTS = `${API}/services/snapshots/v1/snapshots.proto`;

function skip(t: TestContext, why: string): undefined {
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return undefined;
}

/** The Go source dir holding containerd's api/ (…/usr/share/gocode/src), or undefined (skipped). */
function containerdSources(t: TestContext): string | undefined {
  for (const base of ['/usr/share/gocode/src', '/tmp/ctdproto/usr/share/gocode/src']) {
    if (existsSync(join(base, SNAPSHOTS))) return base;
  }
  if (!needRoot(t, `downloading Debian's ${PKG} for containerd's .proto files`)) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'ctdproto-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  try {
    execFileSync('apt-get', ['download', PKG], { cwd: dir, stdio: 'pipe', timeout: 180_000 });
    const deb = readdirSync(dir).find((f) => f.startsWith(PKG) && f.endsWith('.deb'));
    if (deb === undefined) throw new Error('apt-get download left no .deb');
    execFileSync('dpkg', ['-x', join(dir, deb), join(dir, 'x')], { stdio: 'pipe', timeout: 120_000 });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    return skip(t, `cannot get ${PKG}: ${err.stderr?.toString().trim() || err.message}`);
  }
  const base = join(dir, 'x', 'usr', 'share', 'gocode', 'src');
  if (!existsSync(join(base, SNAPSHOTS))) return skip(t, `${PKG} has no ${SNAPSHOTS}`);
  return base;
}

/** A root that finds imports in `dirs` (google/protobuf/* come with protobufjs). */
async function load(entry: string, dirs: string[]): Promise<protobuf.Root> {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (target.startsWith('google/protobuf/')) return target;
    for (const d of dirs) {
      const p = join(d, target);
      if (existsSync(p)) return p;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  await root.load(entry, { keepCase: true });
  root.resolveAll();
  return root;
}

type Shape = Record<string, unknown>;

/** Everything about a namespace that decides the wire format and the gRPC paths. */
function shape(ns: protobuf.NamespaceBase): Shape {
  const out: Shape = {};
  for (const obj of ns.nestedArray) {
    if (obj instanceof protobuf.Type) {
      out[obj.fullName] = {
        kind: 'message',
        fields: obj.fieldsArray
          .map((f) => ({
            name: f.name,
            id: f.id,
            type: f.resolvedType !== null ? f.resolvedType.fullName : f.type,
            repeated: f.repeated,
            map: f instanceof protobuf.MapField ? f.keyType : null,
            packed: f.packed,
            optional: f.options?.['proto3_optional'] === true,
            oneof: f.partOf?.name ?? null,
          }))
          .sort((a, b) => a.id - b.id),
        oneofs: obj.oneofsArray.map((o) => [o.name, o.oneof]),
        reserved: obj.reserved ?? null,
        nested: shape(obj),
      };
    } else if (obj instanceof protobuf.Enum) {
      out[obj.fullName] = { kind: 'enum', values: { ...obj.values } };
    } else if (obj instanceof protobuf.Service) {
      out[obj.fullName] = {
        kind: 'service',
        methods: obj.methodsArray.map((m) => ({
          name: m.name,
          request: m.resolvedRequestType?.fullName,
          response: m.resolvedResponseType?.fullName,
          requestStream: m.requestStream === true,
          responseStream: m.responseStream === true,
        })),
      };
    } else if (obj instanceof protobuf.Namespace) {
      Object.assign(out, shape(obj));
    }
  }
  return out;
}

test('our snapshots.proto and mount.proto equal containerd’s on the wire', async (t) => {
  const base = containerdSources(t);
  if (base === undefined) return;

  // containerd's files import gogoproto weakly; a stub satisfies the import.
  const stubs = mkdtempSync(join(tmpdir(), 'gogo-stub-'));
  t.after(() => rmSync(stubs, { recursive: true, force: true }));
  mkdirSync(join(stubs, 'gogoproto'));
  writeFileSync(join(stubs, 'gogoproto', 'gogo.proto'), 'syntax = "proto2";\npackage gogoproto;\n');

  const theirs = await load(join(base, SNAPSHOTS), [base, stubs]);
  const protoDir = join(PROJECT_ROOT, 'proto');
  const ours = await load(join(protoDir, 'containerd/services/snapshots/v1/snapshots.proto'), [protoDir]);

  const theirShape = shape(theirs.lookup('containerd') as protobuf.Namespace);
  const ourShape = shape(ours.lookup('containerd') as protobuf.Namespace);

  // Not a vacuous match: what containerd's proxy plugin relies on is there.
  const svc = theirShape['.containerd.services.snapshots.v1.Snapshots'] as { methods: { name: string }[] };
  assert.deepEqual(
    svc.methods.map((m) => m.name),
    ['Prepare', 'View', 'Mounts', 'Commit', 'Remove', 'Stat', 'Update', 'List', 'Usage', 'Cleanup'],
  );
  assert.ok(theirShape['.containerd.types.Mount']);
  assert.equal(Object.keys(theirShape).length, 21, Object.keys(theirShape).join(', '));

  // Same set of names, then each one identical (one assertion each: a mismatch names the type).
  assert.deepEqual(Object.keys(ourShape).sort(), Object.keys(theirShape).sort());
  for (const name of Object.keys(theirShape)) {
    assert.deepEqual(ourShape[name], theirShape[name], name);
  }

  // The well-known types both sides use are the same ones.
  for (const wk of ['google.protobuf.Timestamp', 'google.protobuf.FieldMask', 'google.protobuf.Empty']) {
    assert.deepEqual(
      shape(ours.lookup(wk)?.parent as protobuf.Namespace)[`.${wk}`],
      shape(theirs.lookup(wk)?.parent as protobuf.Namespace)[`.${wk}`],
      wk,
    );
  }

  // And the same bytes: an Info with every field set encodes identically.
  const info = {
    name: 'sha256:abc',
    parent: 'p',
    kind: 3,
    created_at: { seconds: 1700000000, nanos: 5 },
    updated_at: { seconds: 1700000001, nanos: 6 },
    labels: { 'containerd.io/snapshot.ref': 'x', b: 'y' },
  };
  const enc = (r: protobuf.Root, type: string, v: object): string =>
    Buffer.from(r.lookupType(type).encode(r.lookupType(type).fromObject(v)).finish()).toString('hex');
  const T = 'containerd.services.snapshots.v1.';
  assert.equal(
    enc(ours, `${T}ListSnapshotsResponse`, { info: [info, info] }),
    enc(theirs, `${T}ListSnapshotsResponse`, { info: [info, info] }),
  );
  const mounts = {
    mounts: [{ type: 'overlay', source: 'overlay', target: 't', options: ['lowerdir=/a', 'ro'] }],
  };
  assert.equal(
    enc(ours, `${T}PrepareSnapshotResponse`, mounts),
    enc(theirs, `${T}PrepareSnapshotResponse`, mounts),
  );
  const upd = { snapshotter: 'nydus', info, update_mask: { paths: ['labels.a'] } };
  assert.equal(enc(ours, `${T}UpdateSnapshotRequest`, upd), enc(theirs, `${T}UpdateSnapshotRequest`, upd));
  const usage = { size: 2 ** 40, inodes: 7 };
  assert.equal(enc(ours, `${T}UsageResponse`, usage), enc(theirs, `${T}UsageResponse`, usage));
});
