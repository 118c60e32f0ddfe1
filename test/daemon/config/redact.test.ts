import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configApiView, parseDaemonConfig, redactConfig } from '../../../src/daemon/config/index.js';

/** Unit tests: secrets never leave through the API echo, and the echo reads back in. */

const SECRET_TOML = `
version = 2
[backend]
type = "oss"
[backend.oss]
endpoint = "my_endpoint"
bucket_name = "my_bucket"
access_key_id = "my_ak_id"
access_key_secret = "my_ak_secret"
[cache]
type = "filecache"
[cache.filecache]
work_dir = "/c"
enable_encryption = true
encryption_key = "fc4a7db5614afc2f400e9478bebed1aefdbc9d7cd03210b84f144683a7a6fd1a"
`;

test('redact: OSS and S3 keys are blanked, other keys kept, the original untouched', () => {
  const { config } = parseDaemonConfig(SECRET_TOML);
  const clean = redactConfig(config);
  assert.equal(clean.backend.oss?.access_key_id, '');
  assert.equal(clean.backend.oss?.access_key_secret, '');
  assert.equal(clean.backend.oss?.endpoint, 'my_endpoint');
  assert.equal(clean.cache.filecache?.encryption_key, '');
  assert.equal(clean.cache.filecache?.enable_encryption, true);
  assert.equal(config.backend.oss?.access_key_id, 'my_ak_id');
  assert.equal(config.cache.filecache?.encryption_key.length, 64);

  const s3 = parseDaemonConfig(
    JSON.stringify({
      version: 2,
      backend: {
        type: 's3',
        s3: { region: 'r', bucket_name: 'b', access_key_id: 'id', access_key_secret: 'sec' },
      },
    }),
  ).config;
  const s3Clean = redactConfig(s3);
  assert.equal(s3Clean.backend.s3?.access_key_id, '');
  assert.equal(s3Clean.backend.s3?.access_key_secret, '');
  assert.equal(s3Clean.backend.s3?.region, 'r');
});

test('redact: registry auth and registry_token are removed', () => {
  const { config } = parseDaemonConfig(
    JSON.stringify({
      device: {
        backend: {
          type: 'registry',
          config: { host: 'h', repo: 'r', auth: 'dXNlcjpwYXNz', registry_token: 't' },
        },
      },
      mode: 'direct',
    }),
  );
  const clean = redactConfig(config);
  assert.equal(clean.backend.registry?.host, 'h');
  assert.equal(Object.hasOwn(clean.backend.registry ?? {}, 'auth'), false);
  assert.equal(Object.hasOwn(clean.backend.registry ?? {}, 'registry_token'), false);
  const text = JSON.stringify(configApiView(config));
  assert.ok(!text.includes('dXNlcjpwYXNz'));
  assert.ok(text.includes('"auth":null'));
  assert.ok(text.includes('"registry_token":null'));
});

test('api view: upstream serialization, nulls for absent Options, keys in upstream order', () => {
  const { config } = parseDaemonConfig(SECRET_TOML);
  const view = configApiView(config);
  const text = JSON.stringify(view);
  for (const secret of ['my_ak_id', 'my_ak_secret', 'fc4a7db5614afc2f'])
    assert.ok(!text.includes(secret), secret);
  assert.deepEqual(Object.keys(view), [
    'version',
    'id',
    'backend',
    'external_backends',
    'cache',
    'rafs',
    'overlay',
  ]);
  const backend = view['backend'] as Record<string, unknown>;
  assert.deepEqual(Object.keys(backend), [
    'type',
    'localdisk',
    'localfs',
    'oss',
    's3',
    'registry',
    'http-proxy',
  ]);
  assert.equal(backend['localfs'], null);
  assert.deepEqual(Object.keys(backend['oss'] as object), [
    'scheme',
    'endpoint',
    'bucket_name',
    'object_prefix',
    'access_key_id',
    'access_key_secret',
    'skip_verify',
    'ca_cert_files',
    'timeout',
    'connect_timeout',
    'retry_limit',
    'proxy',
  ]);
  const cache = view['cache'] as Record<string, unknown>;
  assert.deepEqual(Object.keys(cache), [
    'type',
    'compressed',
    'validate',
    'prefetch',
    'filecache',
    'fscache',
  ]);
  assert.equal(cache['fscache'], null);
  assert.equal(view['overlay'], null);
});

test('api view: reads back in as the redacted config', () => {
  for (const text of [
    SECRET_TOML,
    '{"device": {"backend": {"type": "registry", "config": {"host": "h", "repo": "r", "auth": "a"}}}, "mode": "direct"}',
  ]) {
    const { config } = parseDaemonConfig(text);
    const back = parseDaemonConfig(JSON.stringify(configApiView(config)));
    assert.deepEqual(back.warnings, []);
    assert.deepEqual(back.config, redactConfig(config));
  }
});
