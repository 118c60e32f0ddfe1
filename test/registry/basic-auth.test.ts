import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isNydusError } from '../../src/errors/errors.js';
import type { RegistryClient, RegistryOptions } from '../../src/registry/client.js';
import { credentialsFor } from '../../src/registry/docker-config.js';
import {
  haveRegistry,
  needRegistry,
  sha256Digest,
  startRegistry,
  type TestRegistry,
  withClient as withRegistryClient,
} from '../helpers/registry.js';

let reg: TestRegistry;
const USER = 'alice';
const PASS = 'S3cret-pass';

before(async () => {
  if (haveRegistry()) reg = await startRegistry({ htpasswd: { user: USER, pass: PASS } });
});

after(async () => {
  await reg?.stop();
});

function withClient<T>(opts: RegistryOptions, fn: (c: RegistryClient) => Promise<T>): Promise<T> {
  return withRegistryClient(reg, opts, fn);
}

const blob = randomBytes(4096);

test('Basic auth with the right password', async (t) => {
  if (!needRegistry(t)) return;
  await withClient({ credentials: { username: USER, password: PASS } }, async (c) => {
    const repo = c.repository('basic/app');
    assert.equal(await repo.pushBlob(sha256Digest(blob), blob.length, blob), 'uploaded');
    assert.deepEqual(await repo.fetchBlob(sha256Digest(blob)), blob);
  });
});

test('Basic auth with a wrong password or none is ERR_AUTH, and the password never shows', async (t) => {
  if (!needRegistry(t)) return;
  await withClient({ credentials: { username: USER, password: 'wrong-Pa55' } }, async (c) => {
    await assert.rejects(
      c.repository('basic/app').fetchBlob(sha256Digest(blob)),
      (e: unknown) =>
        isNydusError(e) &&
        e.code === 'ERR_AUTH' &&
        e.message.includes(`"${USER}"`) &&
        e.message.includes(reg.host) &&
        !e.message.includes('wrong-Pa55'),
    );
  });
  await withClient({}, async (c) => {
    await assert.rejects(
      c.repository('basic/app').headBlob(sha256Digest(blob)),
      (e: unknown) => isNydusError(e) && e.code === 'ERR_AUTH' && /no credentials/.test(e.message),
    );
  });
});

test('credentials come from a Docker config.json in DOCKER_CONFIG', async (t) => {
  if (!needRegistry(t)) return;
  const variants: [string, Record<string, unknown>][] = [
    [`http://${reg.host}/v1/`, { auth: Buffer.from(`${USER}:${PASS}`).toString('base64') }],
    [reg.host, { username: USER, password: PASS }],
  ];
  for (const [i, [key, entry]] of variants.entries()) {
    const dir = join(reg.dir, `docker-config-${i}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ auths: { 'other.example': { auth: 'eDp5' }, [key]: entry } }),
    );
    assert.deepEqual(await credentialsFor(reg.host, { DOCKER_CONFIG: dir }), {
      username: USER,
      password: PASS,
    });
    await withClient({ env: { DOCKER_CONFIG: dir } }, async (c) => {
      assert.equal(await c.repository('basic/app').headBlob(sha256Digest(blob)), blob.length);
    });
  }
});

test('Docker config lookups: aliases, identity tokens, missing files', async () => {
  const dir = join(reg?.dir ?? '/tmp', 'docker-config-aliases');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw:with:colons').toString('base64') },
        'tok.example:5000': { identitytoken: 'idt' },
      },
    }),
  );
  const env = { DOCKER_CONFIG: dir };
  assert.deepEqual(await credentialsFor('docker.io', env), { username: 'hub', password: 'pw:with:colons' });
  assert.deepEqual(await credentialsFor('registry-1.docker.io', env), {
    username: 'hub',
    password: 'pw:with:colons',
  });
  assert.deepEqual(await credentialsFor('tok.example:5000', env), { identityToken: 'idt' });
  assert.equal(await credentialsFor('tok.example', env), undefined);
  assert.equal(await credentialsFor('x', { DOCKER_CONFIG: join(dir, 'none') }), undefined);
  assert.equal(await credentialsFor('x', { HOME: join(dir, 'none') }), undefined);
});
