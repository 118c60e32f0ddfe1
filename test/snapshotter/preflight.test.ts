import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { NydusError } from '../../src/errors/errors.js';
import { parseBootstrap } from '../../src/format/bootstrap.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { parseReference } from '../../src/oci/reference.js';
import { Keychain } from '../../src/snapshotter/keychain.js';
import { LABEL_PULL_SECRET, LABEL_PULL_USERNAME } from '../../src/snapshotter/labels.js';
import { DEFAULT_TEMPLATE, imageConfig, type JsonObject } from '../../src/snapshotter/nydusd-config.js';
import { checkBootstrap, checkRegistryAccess } from '../../src/snapshotter/preflight.js';
import { FIXTURE, PROJECT_ROOT, upstreamFixture } from '../helpers/fixtures.js';
import {
  freePort,
  haveRegistry,
  needRegistry,
  sha256Digest,
  startRegistry,
  withClient,
  type TestRegistry,
} from '../helpers/registry.js';

/**
 * The checks before a nydusd starts for an image: the bootstrap parses (upstream fixtures, their
 * blob ids compared with what `nydus-image inspect -R blobs` prints), and the registry lets the
 * configured credentials read the first blob (a real docker-registry with htpasswd or token auth).
 */

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'preflight-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The blob ids `nydus-image inspect -R blobs` reports for a bootstrap. */
function inspectBlobIds(bootstrap: string): string[] {
  const out = execFileSync(
    process.execPath,
    [join(PROJECT_ROOT, 'dist', 'src', 'cli', 'nydus-image.js'), 'inspect', '-R', 'blobs', bootstrap],
    { encoding: 'utf8', timeout: 30_000 },
  );
  return (JSON.parse(out) as { blob_id: string }[]).map((b) => b.blob_id);
}

async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  ...patterns: (RegExp | string)[]
): Promise<string> {
  let message = '';
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof NydusError, `expected a NydusError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const want of patterns) {
      if (typeof want === 'string') assert.ok(e.message.includes(want), `${e.message} lacks ${want}`);
      else assert.match(e.message, want);
    }
    message = e.message;
    return true;
  });
  return message;
}

for (const [name, rel] of [
  ['RAFS v5', FIXTURE.v5Sha256],
  ['RAFS v5 (blake3)', FIXTURE.v5Blake3],
  ['RAFS v6', FIXTURE.v6Boot],
] as const) {
  test(`checkBootstrap on the upstream ${name} fixture returns its blob ids`, async (t) => {
    const p = upstreamFixture(t, rel);
    if (p === undefined) return;
    const ids = await checkBootstrap(p, 'fixture:v1');
    assert.deepEqual(ids, inspectBlobIds(p));
    assert.deepEqual(
      ids,
      parseBootstrap(readFileSync(p)).blobs.map((b) => b.blobId),
    );
    assert.ok(ids.length > 0 && ids.every((id) => /^[0-9a-f]{64}$/.test(id)), ids.join(','));
  });
}

test('checkBootstrap on a corrupted copy is ERR_FORMAT naming the image and the file', async (t) => {
  const src = upstreamFixture(t, FIXTURE.v6Boot);
  const src5 = upstreamFixture(t, FIXTURE.v5Sha256);
  if (src === undefined || src5 === undefined) return;
  const dir = tempDir(t);

  // No magic at either place (v5 at 0, EROFS at 1024).
  const zeroed = join(dir, 'zeroed.boot');
  const buf = readFileSync(src);
  buf.fill(0, 0, 4096);
  writeFileSync(zeroed, buf);
  await rejectsWith(
    checkBootstrap(zeroed, '127.0.0.1:5000/broken:v1'),
    'ERR_FORMAT',
    'image 127.0.0.1:5000/broken:v1',
    `"${zeroed}"`,
  );

  // Cut short after the superblock.
  for (const [i, s] of [src, src5].entries()) {
    const cut = join(dir, `cut-${i}.boot`);
    copyFileSync(s, cut);
    truncateSync(cut, 1100);
    await rejectsWith(checkBootstrap(cut, 'img:cut'), 'ERR_FORMAT', 'image img:cut', `"${cut}"`);
  }

  // Not a bootstrap at all.
  const junk = join(dir, 'junk.boot');
  writeFileSync(junk, randomBytes(8192));
  await rejectsWith(checkBootstrap(junk, 'img:junk'), 'ERR_FORMAT', 'image img:junk');

  const empty = join(dir, 'empty.boot');
  writeFileSync(empty, '');
  await rejectsWith(checkBootstrap(empty, 'img:empty'), 'ERR_FORMAT', 'image img:empty');
});

test('checkBootstrap on a missing file is ERR_IO naming the image', async (t) => {
  const missing = join(tempDir(t), 'image.boot');
  await rejectsWith(checkBootstrap(missing, 'img:gone'), 'ERR_IO', 'image img:gone', `"${missing}"`);
});

// ---- registry access against a real docker-registry ------------------------------------------

const USER = 'puller';
const PASS = 'Pa55-word';
let basic: TestRegistry | undefined;
let token: TestRegistry | undefined;
/** The v5 fixture blob (its id is its sha256), pushed to both registries as preflight/app. */
let blobId: string | undefined;

before(async () => {
  if (!haveRegistry()) return;
  basic = await startRegistry({ htpasswd: { user: USER, pass: PASS } });
  token = await startRegistry({ token: { user: USER, pass: PASS } });
});

after(async () => {
  await basic?.stop();
  await token?.stop();
});

/** Push the fixture blob once; returns its id. */
async function pushedBlob(t: TestContext): Promise<string | undefined> {
  if (blobId !== undefined) return blobId;
  const p = upstreamFixture(t, FIXTURE.v5Blob);
  if (p === undefined) return undefined;
  const data = readFileSync(p);
  const digest = sha256Digest(data);
  for (const reg of [basic!, token!]) {
    await withClient(reg, { credentials: { username: USER, password: PASS } }, async (c) => {
      await c.repository('preflight/app').pushBlob(digest, data.length, data);
    });
  }
  blobId = digest.slice('sha256:'.length);
  return blobId;
}

interface RecordingLogger {
  log: Logger;
  lines: string[];
}

function recordingLogger(): RecordingLogger {
  const lines: string[] = [];
  return { log: createLogger('debug', undefined, (l) => lines.push(l)), lines };
}

/** The config the snapshotter would write for `ref` with these credentials (seed-like v1 template). */
function configFor(
  ref: string,
  creds: { auth?: string; registryToken?: string },
  template: JsonObject = DEFAULT_TEMPLATE,
): JsonObject {
  return imageConfig(template, { ref: parseReference(ref), ...creds }, '/nonexistent/cache', 'preflight');
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('checkRegistryAccess: the right credentials pass (plain HTTP, and the template default scheme "" with skip_verify)', async (t) => {
  if (!needRegistry(t)) return;
  const id = await pushedBlob(t);
  if (id === undefined) return;
  const ref = `${basic!.host}/preflight/app:v1`;

  // Through the keychain, as the snapshotter does: label credentials.
  const access = await new Keychain({ DOCKER_CONFIG: basic!.dir }).forImage(parseReference(ref), {
    [LABEL_PULL_USERNAME]: USER,
    [LABEL_PULL_SECRET]: PASS,
  });
  assert.equal(access?.source, 'labels');
  const { auth } = access;
  assert.ok(auth !== undefined);

  // DEFAULT_TEMPLATE (like seed 003) leaves the scheme empty and skips verification: the check
  // falls back from HTTPS to the registry's plain HTTP, as nydusd does.
  const r1 = recordingLogger();
  await checkRegistryAccess(configFor(ref, { auth }), [id], ref, r1.log);
  assert.deepEqual(
    r1.lines.filter((l) => / (WARN|ERROR) /.test(l)),
    [],
  );

  const httpTemplate = structuredClone(DEFAULT_TEMPLATE);
  (((httpTemplate['device'] as JsonObject)['backend'] as JsonObject)['config'] as JsonObject)['scheme'] =
    'http';
  const r2 = recordingLogger();
  await checkRegistryAccess(configFor(ref, { auth }, httpTemplate), [id], ref, r2.log);
  assert.deepEqual(
    r2.lines.filter((l) => / (WARN|ERROR) /.test(l)),
    [],
  );
});

test('checkRegistryAccess: wrong or missing credentials are ERR_AUTH "refused access"', async (t) => {
  if (!needRegistry(t)) return;
  const id = await pushedBlob(t);
  if (id === undefined) return;
  const ref = `${basic!.host}/preflight/app:v1`;
  const { log } = recordingLogger();

  const msg = await rejectsWith(
    checkRegistryAccess(configFor(ref, { auth: b64(`${USER}:wrong-Pa55`) }), [id], ref, log),
    'ERR_AUTH',
    `Registry ${basic!.host} refused access to image ${ref}`,
  );
  assert.ok(!msg.includes('wrong-Pa55'), `the password shows: ${msg}`);
  assert.ok(!msg.includes('no credentials found'), msg);

  await rejectsWith(
    checkRegistryAccess(configFor(ref, {}), [id], ref, log),
    'ERR_AUTH',
    'refused access',
    'no credentials found',
  );
});

test('checkRegistryAccess: a blob the repository does not have is ERR_NOT_FOUND', async (t) => {
  if (!needRegistry(t)) return;
  if ((await pushedBlob(t)) === undefined) return;
  const ref = `${basic!.host}/preflight/app:v1`;
  const missing = randomBytes(32).toString('hex');
  await rejectsWith(
    checkRegistryAccess(
      configFor(ref, { auth: b64(`${USER}:${PASS}`) }),
      [missing],
      ref,
      recordingLogger().log,
    ),
    'ERR_NOT_FOUND',
    `sha256:${missing}`,
    `${basic!.host}/preflight/app`,
    `image ${ref}`,
  );
  // The blob exists, but in another repository.
  const other = `${basic!.host}/preflight/other:v1`;
  await rejectsWith(
    checkRegistryAccess(
      configFor(other, { auth: b64(`${USER}:${PASS}`) }),
      [blobId!],
      other,
      recordingLogger().log,
    ),
    'ERR_NOT_FOUND',
    `${basic!.host}/preflight/other`,
  );
});

test('checkRegistryAccess: a registry token (pullsecret without user) works with token auth', async (t) => {
  if (!needRegistry(t)) return;
  const id = await pushedBlob(t);
  if (id === undefined) return;
  const reg = token!;
  const ref = `${reg.host}/preflight/app:v1`;
  // A pull token from the registry's issuer, as a CRI client or a user would hold one.
  const u = new URL(reg.tokenIssuer!.url);
  u.searchParams.set('service', reg.tokenIssuer!.service);
  u.searchParams.set('scope', 'repository:preflight/app:pull');
  const res = await fetch(u, {
    headers: { authorization: `Basic ${b64(`${USER}:${PASS}`)}` },
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(res.status, 200);
  const { token: tok } = (await res.json()) as { token: string };

  const access = await new Keychain({ DOCKER_CONFIG: reg.dir }).forImage(parseReference(ref), {
    [LABEL_PULL_SECRET]: tok,
  });
  assert.deepEqual(access, { registryToken: tok, source: 'labels' });
  const r = recordingLogger();
  await checkRegistryAccess(configFor(ref, { registryToken: tok }), [id], ref, r.log);
  assert.deepEqual(
    r.lines.filter((l) => / (WARN|ERROR) /.test(l)),
    [],
  );

  await rejectsWith(
    checkRegistryAccess(configFor(ref, { registryToken: 'not-a-token' }), [id], ref, recordingLogger().log),
    'ERR_AUTH',
    'refused access',
  );
});

test('checkRegistryAccess: an unreachable registry only logs a warning', async () => {
  const host = `127.0.0.1:${await freePort()}`;
  const ref = `${host}/preflight/app:v1`;
  const r = recordingLogger();
  const start = Date.now();
  await checkRegistryAccess(configFor(ref, { auth: b64('u:p') }), ['a'.repeat(64)], ref, r.log);
  assert.ok(Date.now() - start < 15_000);
  const warns = r.lines.filter((l) => / WARN /.test(l));
  assert.ok(
    warns.some((l) => l.includes(`Cannot check registry access for image ${ref} now`)),
    r.lines.join(''),
  );
  assert.ok(!r.lines.join('').includes(b64('u:p')));
});

test('checkRegistryAccess: nothing to check for other backends, no blobs, or no host/repo', async () => {
  const r = recordingLogger();
  const localfs: JsonObject = { device: { backend: { type: 'localfs', config: { dir: '/x' } } } };
  await checkRegistryAccess(localfs, ['a'.repeat(64)], 'img', r.log);
  // A registry config without host: the template itself.
  await checkRegistryAccess(DEFAULT_TEMPLATE, ['a'.repeat(64)], 'img', r.log);
  // No blobs: no request, even to a closed port.
  const host = `127.0.0.1:${await freePort()}`;
  await checkRegistryAccess(configFor(`${host}/a/b`, {}), [], 'img', r.log);
  assert.deepEqual(r.lines, []);
});
