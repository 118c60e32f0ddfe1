import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { isNydusError } from '../../src/errors/errors.js';
import { RegistryClient } from '../../src/registry/client.js';
import {
  haveRegistry,
  needRegistry,
  sha256Digest,
  startRegistry,
  type TestRegistry,
} from '../helpers/registry.js';

let reg: TestRegistry;

before(async () => {
  if (haveRegistry()) reg = await startRegistry({ tls: true });
});

after(async () => {
  await reg?.stop();
});

async function roundTrip(client: RegistryClient, name: string): Promise<void> {
  const repo = client.repository(name);
  const a = randomBytes(20_000);
  assert.equal(await repo.pushBlob(sha256Digest(a), a.length, a), 'uploaded');
  assert.deepEqual(await repo.readBlobRange(sha256Digest(a), 100, 1000), a.subarray(100, 1100));
  assert.equal(client.scheme, 'https');
}

test('HTTPS with the test CA through caCertFiles', async (t) => {
  if (!needRegistry(t)) return;
  const client = new RegistryClient(reg.host, {
    caCertFiles: [reg.caFile!],
    retries: 0,
    env: { DOCKER_CONFIG: reg.dir },
  });
  try {
    await roundTrip(client, 'tls/ca');
  } finally {
    await client.close();
  }
});

test('HTTPS with insecure (no verification)', async (t) => {
  if (!needRegistry(t)) return;
  const client = new RegistryClient(reg.host, {
    insecure: true,
    retries: 0,
    env: { DOCKER_CONFIG: reg.dir },
  });
  try {
    await roundTrip(client, 'tls/insecure');
  } finally {
    await client.close();
  }
});

test('HTTPS without the CA fails with a clear certificate error; a missing CA file is named', async (t) => {
  if (!needRegistry(t)) return;
  const client = new RegistryClient(reg.host, { retries: 2, env: { DOCKER_CONFIG: reg.dir } });
  try {
    await assert.rejects(
      client.repository('tls/none').getManifest('latest'),
      (e: unknown) =>
        isNydusError(e) &&
        e.code === 'ERR_NETWORK' &&
        /certificate/.test(e.message) &&
        e.message.includes(reg.host) &&
        /caCertFiles/.test(e.message),
    );
  } finally {
    await client.close();
  }
  assert.throws(
    () => new RegistryClient(reg.host, { caCertFiles: ['/nonexistent/ca.pem'] }),
    (e: unknown) =>
      isNydusError(e) && e.code === 'ERR_INVALID_ARG' && e.message.includes('/nonexistent/ca.pem'),
  );
});
