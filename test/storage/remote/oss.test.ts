import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NydusError } from '../../../src/errors/errors.js';
import { ossSchema } from '../../../src/daemon/config/schema.js';
import { Connection } from '../../../src/storage/remote/connection.js';
import {
  ossBlobSource,
  ossObjectStore,
  ossObjectUrl,
  ossPathStyle,
  ossResource,
  ossStringToSign,
  signOss,
} from '../../../src/storage/remote/oss.js';
import { connectionConfig } from '../../../src/storage/remote/s3.js';
import { ossTable, startS3 } from '../../helpers/s3.js';
import type { BlobInfo } from '../../../src/format/model.js';

/**
 * The oss backend's signature V1 and URLs: Alibaba's published example reproduced exactly, and
 * the verifying front (OSS mode) in front of s3rver accepting what we sign and refusing a wrong
 * secret.
 */

test('OSS V1: the published example (PUT /oss-example/nelson) reproduces exactly', () => {
  const headers: Record<string, string> = {
    'Content-Md5': 'ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=',
    'Content-Type': 'text/html',
    Date: 'Thu, 17 Nov 2005 18:49:58 GMT',
    'X-OSS-Meta-Author': 'foo@bar.com',
    'X-OSS-Magic': 'abracadabra',
  };
  assert.equal(
    ossStringToSign('PUT', headers, '/oss-example/nelson'),
    'PUT\nODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=\ntext/html\nThu, 17 Nov 2005 18:49:58 GMT\n' +
      'x-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n/oss-example/nelson',
  );
  signOss(
    'PUT',
    headers,
    ossResource('oss-example', 'nelson'),
    { accessKeyId: '44CF9590006BF252F707', secret: 'OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV' },
    { keepDate: true },
  );
  assert.equal(headers['authorization'], 'OSS 44CF9590006BF252F707:26NBxoKdsyly4EDv6inkoDft/yA=');
  // A fresh Date is an HTTP-date.
  const h: Record<string, string> = {};
  signOss('GET', h, '/b/k', { accessKeyId: 'id', secret: 's' }, { date: new Date('2005-11-17T18:49:58Z') });
  assert.equal(h['date'], 'Thu, 17 Nov 2005 18:49:58 GMT');
  assert.match(h['authorization']!, /^OSS id:[A-Za-z0-9+/]+=*$/);
});

test('oss URLs: virtual-hosted for a host name, path-style for an IP address or localhost', () => {
  const base = ossSchema.parse({ endpoint: 'oss.example.test', bucket_name: 'bkt', object_prefix: 'n/' });
  assert.equal(ossObjectUrl(base, 'n/abc').href, 'https://bkt.oss.example.test/n/abc');
  assert.equal(
    ossObjectUrl({ ...base, endpoint: '127.0.0.1:9000', scheme: 'http' }, 'n/abc').href,
    'http://127.0.0.1:9000/bkt/n/abc',
  );
  assert.ok(ossPathStyle('localhost:8080'));
  assert.ok(ossPathStyle('[::1]:8080'));
  assert.ok(ossPathStyle('10.0.0.1'));
  assert.ok(!ossPathStyle('oss.example.test:443'));
});

test('oss against s3rver behind the verifying front: upload, size, ranged reads; a wrong secret is refused', async (t) => {
  const s3 = await startS3();
  const dir = mkdtempSync(join(tmpdir(), 'nydus-oss-test-'));
  t.after(async () => {
    await s3.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const data = randomBytes(200_000);
  const file = join(dir, 'blob');
  writeFileSync(file, data);
  const id = 'c'.repeat(64);
  const cfg = ossSchema.parse(ossTable(s3));
  const store = ossObjectStore(cfg);
  t.after(() => store.close());
  assert.equal(await store.size(id), undefined);
  await store.upload(id, file);
  assert.equal(await store.size(id), data.length);
  assert.ok(s3.requests.every((r) => r.auth === 'oss'));

  const conn = new Connection(connectionConfig(cfg));
  const src = ossBlobSource(cfg, conn);
  t.after(() => src.close());
  const reader = await src.open({ blobId: id } as BlobInfo);
  assert.equal(reader.size, data.length);
  assert.ok((await reader.read(1000, 150_000)).equals(data.subarray(1000, 151_000)));
  assert.equal(s3.rejected().length, 0);

  const bad = ossSchema.parse(ossTable(s3, { access_key_secret: 'wrong' }));
  const badStore = ossObjectStore(bad);
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
  const badSrc = ossBlobSource(bad, new Connection(connectionConfig(bad)));
  t.after(() => badSrc.close());
  await assert.rejects(
    () => badSrc.open({ blobId: id } as BlobInfo),
    (e: unknown) => e instanceof NydusError && e.code === 'ERR_AUTH',
  );
  assert.ok(s3.rejected().length >= 2);
});
