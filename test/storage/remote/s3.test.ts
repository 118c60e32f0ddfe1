import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NydusError } from '../../../src/errors/errors.js';
import { s3Schema } from '../../../src/daemon/config/schema.js';
import { Connection } from '../../../src/storage/remote/connection.js';
import {
  connectionConfig,
  EMPTY_SHA256,
  objectKey,
  s3BlobSource,
  s3Endpoint,
  s3ObjectStore,
  s3ObjectUrl,
  s3Signer,
  signS3,
} from '../../../src/storage/remote/s3.js';
import { s3Table, startS3 } from '../../helpers/s3.js';
import type { BlobInfo } from '../../../src/format/model.js';

/**
 * The s3 backend's signing and URLs: AWS's published SigV4 example reproduced exactly, and a
 * real S3 server (s3rver behind a front that recomputes every signature with the known secret)
 * that accepts what we sign and refuses a wrong secret.
 */

test('SigV4: AWS published example (GET object with Range) reproduces exactly', () => {
  // The "GET Object" example of AWS's S3 SigV4 header-auth documentation.
  const headers: Record<string, string> = { range: 'bytes=0-9' };
  signS3(
    'GET',
    new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
    headers,
    {
      accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      region: 'us-east-1',
    },
    { date: new Date('2013-05-24T00:00:00Z') },
  );
  assert.equal(headers['x-amz-date'], '20130524T000000Z');
  assert.equal(headers['x-amz-content-sha256'], EMPTY_SHA256);
  assert.equal(
    headers['authorization'],
    'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ' +
      'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, ' +
      'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  );
  // Headers outside the signature (user agent, proxy headers) do not change it.
  const again: Record<string, string> = {
    range: 'bytes=0-9',
    'user-agent': 'x',
    'X-Dragonfly-Priority': '6',
  };
  signS3(
    'GET',
    new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
    again,
    {
      accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      region: 'us-east-1',
    },
    { date: new Date('2013-05-24T00:00:00Z') },
  );
  assert.equal(again['authorization'], headers['authorization']);
});

test('s3 URLs are path-style; the endpoint defaults from the region; anonymous without keys', () => {
  const cfg = s3Schema.parse({
    scheme: 'http',
    endpoint: '127.0.0.1:9000',
    region: 'r1',
    bucket_name: 'b',
    object_prefix: 'p/q-',
  });
  assert.equal(objectKey(cfg, 'abc'), 'p/q-abc');
  assert.equal(s3ObjectUrl(cfg, objectKey(cfg, 'abc')).href, 'http://127.0.0.1:9000/b/p/q-abc');
  assert.equal(s3Endpoint({ endpoint: '', region: 'eu-west-1' }), 's3.eu-west-1.amazonaws.com');
  assert.throws(() => s3Endpoint({ endpoint: '', region: '' }), /needs "endpoint" or "region"/);
  assert.equal(s3ObjectUrl({ ...cfg, scheme: '' }, 'k').protocol, 'https:');
  assert.equal(s3Signer(cfg), undefined);
  assert.equal(s3Signer({ ...cfg, access_key_id: 'id' }), undefined);
  assert.notEqual(s3Signer({ ...cfg, access_key_id: 'id', access_key_secret: 's' }), undefined);
});

test('s3 against s3rver behind a verifying front: upload, size, ranged reads; a wrong secret is refused', async (t) => {
  const s3 = await startS3();
  const dir = mkdtempSync(join(tmpdir(), 'nydus-s3-test-'));
  t.after(async () => {
    await s3.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const data = randomBytes(300_000);
  const file = join(dir, 'blob');
  writeFileSync(file, data);
  const id = 'a'.repeat(64);
  const cfg = s3Schema.parse(s3Table(s3));

  const store = s3ObjectStore(cfg);
  t.after(() => store.close());
  assert.equal(await store.size(id), undefined);
  await store.upload(id, file);
  assert.equal(await store.size(id), data.length);
  const chunks: Buffer[] = [];
  for await (const c of await store.download(id)) chunks.push(c as Buffer);
  assert.ok(Buffer.concat(chunks).equals(data));
  assert.ok(s3.requests.every((r) => r.auth === 's3'));
  assert.equal(s3.rejected().length, 0);

  // The nydusd read path: HEAD + signed ranged GETs through a Connection.
  const conn = new Connection(connectionConfig(cfg));
  const src = s3BlobSource(cfg, conn);
  t.after(() => src.close());
  const reader = await src.open({ blobId: id } as BlobInfo);
  assert.equal(reader.size, data.length);
  assert.ok((await reader.read(12_345, 100_000)).equals(data.subarray(12_345, 112_345)));
  assert.ok((await reader.read(data.length - 7, 7)).equals(data.subarray(data.length - 7)));
  assert.equal(s3.rejected().length, 0);

  // A wrong secret: the front answers 403 SignatureDoesNotMatch, we report an auth error.
  const bad = s3Schema.parse(s3Table(s3, { access_key_secret: 'wrong' }));
  const badStore = s3ObjectStore(bad);
  t.after(() => badStore.close());
  // HEAD answers carry no body: the status alone; a GET names the service's error code.
  await assert.rejects(
    () => badStore.size(id),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_AUTH',
  );
  await assert.rejects(
    () => badStore.download(id),
    (e: unknown) =>
      e instanceof NydusError && e.code === 'ERR_AUTH' && /SignatureDoesNotMatch/.test(e.message),
  );
  await assert.rejects(
    () => badStore.upload('b'.repeat(64), file),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_AUTH',
  );
  const badConn = new Connection(connectionConfig(bad));
  const badSrc = s3BlobSource(bad, badConn);
  t.after(() => badSrc.close());
  await assert.rejects(
    () => badSrc.open({ blobId: id } as BlobInfo),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_AUTH',
  );
  assert.ok(s3.rejected().length >= 3);

  // No keys: anonymous requests, refused by this front until it allows them.
  const anon = s3Schema.parse(s3Table(s3, { access_key_id: '', access_key_secret: '' }));
  const anonStore = s3ObjectStore(anon);
  t.after(() => anonStore.close());
  await assert.rejects(
    () => anonStore.size(id),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_AUTH',
  );
  s3.allowAnonymous = true;
  assert.equal(await anonStore.size(id), data.length);
  assert.equal(s3.requests.at(-1)?.auth, 'anonymous');
});
