import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { DOCKER_HUB, parseReference, registryApiHost } from '../../src/oci/reference.js';
import { decodeUserPassword } from '../../src/registry/docker-config.js';
import { Keychain, describeRef } from '../../src/snapshotter/keychain.js';
import { LABEL_PULL_SECRET, LABEL_PULL_USERNAME } from '../../src/snapshotter/labels.js';

/**
 * Where the snapshotter finds registry credentials (upstream-surface §7.9): labels, then what a
 * CRI PullImage carried, then the Docker config in $DOCKER_CONFIG. The expected `auth` strings
 * are checked against the decoder the registry client uses (decodeUserPassword) and against
 * upstream's own test vector ("mock:mock" is "bW9jazptb2Nr" in pkg/auth's TestFromLabels).
 */

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** A temp DOCKER_CONFIG dir holding `auths`, and the env pointing at it. */
function dockerConfig(t: TestContext, auths: Record<string, unknown>): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), 'keychain-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths }));
  return { DOCKER_CONFIG: dir };
}

/** An env whose Docker config does not exist (never the user's own ~/.docker). */
function noDockerConfig(t: TestContext): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), 'keychain-empty-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return { DOCKER_CONFIG: dir, HOME: dir };
}

const labels = (user: string | undefined, secret: string): Record<string, string> => ({
  ...(user !== undefined ? { [LABEL_PULL_USERNAME]: user } : {}),
  [LABEL_PULL_SECRET]: secret,
});

test('label credentials become base64 user:password (upstream vector mock:mock)', async (t) => {
  const kc = new Keychain(noDockerConfig(t));
  const got = await kc.forImage(parseReference('127.0.0.1:5000/app:1'), labels('mock', 'mock'));
  assert.deepEqual(got, { auth: 'bW9jazptb2Nr', source: 'labels' });
  assert.deepEqual(decodeUserPassword(got.auth), { username: 'mock', password: 'mock' });
});

test('a password with a colon survives the round trip through auth', async (t) => {
  const kc = new Keychain(noDockerConfig(t));
  const got = await kc.forImage(parseReference('127.0.0.1:5000/app'), labels('u', 'p:w:d'));
  assert.deepEqual(decodeUserPassword(got!.auth!), { username: 'u', password: 'p:w:d' });
});

test('a pullsecret with an empty or absent username is a registry token', async (t) => {
  const kc = new Keychain(noDockerConfig(t));
  const ref = parseReference('127.0.0.1:5000/app');
  assert.deepEqual(await kc.forImage(ref, labels('', 'tok-1')), { registryToken: 'tok-1', source: 'labels' });
  assert.deepEqual(await kc.forImage(ref, labels(undefined, 'tok-2')), {
    registryToken: 'tok-2',
    source: 'labels',
  });
});

test('an empty pullsecret is no label credential (falls through to the next source)', async (t) => {
  const env = dockerConfig(t, { '127.0.0.1:5000': { auth: b64('dc:pw') } });
  const kc = new Keychain(env);
  const got = await kc.forImage(parseReference('127.0.0.1:5000/app'), labels('user', ''));
  assert.deepEqual(got, { auth: b64('dc:pw'), source: 'docker-config' });
});

test('precedence: labels over CRI-recorded over Docker config', async (t) => {
  const env = dockerConfig(t, { '127.0.0.1:5000': { auth: b64('dc:pw') } });
  const kc = new Keychain(env);
  const ref = parseReference('127.0.0.1:5000/team/app:v1');

  assert.deepEqual(await kc.forImage(ref, {}), { auth: b64('dc:pw'), source: 'docker-config' });

  kc.recordCri(ref, { username: 'cri', password: 'cpw' });
  assert.deepEqual(await kc.forImage(ref, {}), { auth: b64('cri:cpw'), source: 'cri' });

  assert.deepEqual(await kc.forImage(ref, labels('lab', 'lpw')), { auth: b64('lab:lpw'), source: 'labels' });
  // Unrelated labels change nothing.
  assert.deepEqual(await kc.forImage(ref, { 'containerd.io/snapshot/other': 'x' }), {
    auth: b64('cri:cpw'),
    source: 'cri',
  });
});

test('CRI records: every form of auth config, and an empty one records nothing', async (t) => {
  const kc = new Keychain(noDockerConfig(t));
  const ref = (n: number) => parseReference(`127.0.0.1:5000/repo${n}:latest`);

  kc.recordCri(ref(1), { registryToken: 'rt', username: 'ignored', password: 'ignored' });
  kc.recordCri(ref(2), { auth: b64('a:b'), username: 'ignored', password: 'ignored' });
  kc.recordCri(ref(3), { username: 'u', password: 'p' });
  kc.recordCri(ref(4), { username: 'u' });
  kc.recordCri(ref(5), {});
  kc.recordCri(ref(6), { username: '', password: 'p', auth: '', registryToken: '' });

  assert.deepEqual(await kc.forImage(ref(1), {}), { registryToken: 'rt', source: 'cri' });
  assert.deepEqual(await kc.forImage(ref(2), {}), { auth: b64('a:b'), source: 'cri' });
  assert.deepEqual(await kc.forImage(ref(3), {}), { auth: b64('u:p'), source: 'cri' });
  assert.deepEqual(await kc.forImage(ref(4), {}), { auth: b64('u:'), source: 'cri' });
  assert.equal(await kc.forImage(ref(5), {}), undefined);
  assert.equal(await kc.forImage(ref(6), {}), undefined);
  assert.equal(kc.criEntries, 4);
});

test('CRI records are per host/repository: every tag and digest of it, not other repos or hosts', async (t) => {
  const kc = new Keychain(noDockerConfig(t));
  kc.recordCri(parseReference('127.0.0.1:5000/team/app:v1'), { username: 'u', password: 'p' });
  const want = { auth: b64('u:p'), source: 'cri' };

  assert.deepEqual(await kc.forImage(parseReference('127.0.0.1:5000/team/app:v2'), {}), want);
  assert.deepEqual(
    await kc.forImage(parseReference(`127.0.0.1:5000/team/app@sha256:${'a'.repeat(64)}`), {}),
    want,
  );
  assert.equal(await kc.forImage(parseReference('127.0.0.1:5000/team/other:v1'), {}), undefined);
  assert.equal(await kc.forImage(parseReference('127.0.0.1:5000/team/app/sub:v1'), {}), undefined);
  assert.equal(await kc.forImage(parseReference('127.0.0.1:5001/team/app:v1'), {}), undefined);
  assert.equal(await kc.forImage(parseReference('localhost:5000/team/app:v1'), {}), undefined);

  // A later pull of the same repository replaces the record; the count stays.
  kc.recordCri(parseReference('127.0.0.1:5000/team/app:v3'), { registryToken: 'new' });
  assert.deepEqual(await kc.forImage(parseReference('127.0.0.1:5000/team/app:v1'), {}), {
    registryToken: 'new',
    source: 'cri',
  });
  assert.equal(kc.criEntries, 1);
});

test('CRI records for docker.io match however the hub host is spelled', async (t) => {
  const kc = new Keychain(noDockerConfig(t));
  kc.recordCri(parseReference('busybox:1.36'), { username: 'hub', password: 'pw' });
  const want = { auth: b64('hub:pw'), source: 'cri' };
  for (const name of ['busybox', 'docker.io/library/busybox:latest', 'index.docker.io/library/busybox']) {
    assert.deepEqual(await kc.forImage(parseReference(name), {}), want, name);
  }
  // A Reference built by hand with the API host (the parser never yields it) still matches.
  assert.deepEqual(
    await kc.forImage(
      { host: registryApiHost(DOCKER_HUB), repository: 'library/busybox', tag: 'x', digest: undefined },
      {},
    ),
    want,
  );
  assert.equal(await kc.forImage(parseReference('library/alpine'), {}), undefined);
});

test('Docker config: user/password and auth entries, by host, with docker.io aliases', async (t) => {
  const env = dockerConfig(t, {
    'https://index.docker.io/v1/': { auth: b64('hubuser:hubpw') },
    '127.0.0.1:5000': { username: 'local', password: 'lpw' },
    'http://localhost:5001/v2/': { auth: b64('lh:pw') },
  });
  const kc = new Keychain(env);
  assert.deepEqual(await kc.forImage(parseReference('busybox'), {}), {
    auth: b64('hubuser:hubpw'),
    source: 'docker-config',
  });
  assert.deepEqual(await kc.forImage(parseReference('docker.io/ns/app'), {}), {
    auth: b64('hubuser:hubpw'),
    source: 'docker-config',
  });
  assert.deepEqual(await kc.forImage(parseReference('127.0.0.1:5000/x'), {}), {
    auth: b64('local:lpw'),
    source: 'docker-config',
  });
  assert.deepEqual(await kc.forImage(parseReference('localhost:5001/x'), {}), {
    auth: b64('lh:pw'),
    source: 'docker-config',
  });
  assert.equal(await kc.forImage(parseReference('127.0.0.1:5002/x'), {}), undefined);
});

test('an identity token in the Docker config gives no credentials', async (t) => {
  const env = dockerConfig(t, {
    '127.0.0.1:5000': { auth: b64('ignored:ignored'), identitytoken: 'refresh-token' },
  });
  const kc = new Keychain(env);
  assert.equal(await kc.forImage(parseReference('127.0.0.1:5000/x'), {}), undefined);
  // ... but a higher source still wins.
  kc.recordCri(parseReference('127.0.0.1:5000/x'), { registryToken: 't' });
  assert.deepEqual(await kc.forImage(parseReference('127.0.0.1:5000/x'), {}), {
    registryToken: 't',
    source: 'cri',
  });
});

test('the keychain reads the Docker config of its constructor env, not of process.env', async (t) => {
  const env = dockerConfig(t, { '127.0.0.1:5000': { auth: b64('mine:pw') } });
  const kc = new Keychain(env);
  const other = new Keychain(noDockerConfig(t));
  assert.equal((await kc.forImage(parseReference('127.0.0.1:5000/x'), {}))?.source, 'docker-config');
  assert.equal(await other.forImage(parseReference('127.0.0.1:5000/x'), {}), undefined);
});

test('describeRef names the image without any secret', () => {
  const ref = parseReference('127.0.0.1:5000/team/app:v1');
  const text = describeRef(ref);
  assert.match(text, /127\.0\.0\.1:5000\/team\/app:v1/);
});
