import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseDaemonConfig, type DaemonConfig } from '../../../src/daemon/config/index.js';

/**
 * Golden tests of the legacy v1 -> v2 mapping (upstream `TryFrom<RafsConfig> for ConfigV2`):
 * a v1 config and the v2 config it must become, key for key; plus the v1 key paths in warnings
 * and refusals.
 */

const V1_FULL = `{
  "device": {
    "id": "/snap-1",
    "backend": {
      "type": "registry",
      "config": {
        "scheme": "http",
        "host": "localhost:5000",
        "repo": "library/ubuntu",
        "auth": "dXNlcjpwYXNz",
        "registry_token": "tok",
        "skip_verify": true,
        "ca_cert_files": ["/etc/ssl/certs/my-ca.pem"],
        "timeout": 10,
        "connect_timeout": 3,
        "retry_limit": 2,
        "blob_url_scheme": "https",
        "blob_redirected_host": "blobs.example.com",
        "proxy": { "url": "http://p2p:65001", "ping_url": "http://p2p:40901/server/ping", "fallback": false }
      }
    },
    "external_backends": [{ "type": "model", "patch": { "id": "1" }, "config": { "k": "v" } }],
    "cache": {
      "type": "blobcache",
      "compressed": true,
      "validate": true,
      "config": { "work_dir": "/var/lib/nydus/cache", "disable_indexed_map": true }
    }
  },
  "mode": "cached",
  "digest_validate": true,
  "iostats_files": true,
  "enable_xattr": true,
  "access_pattern": true,
  "latest_read_files": true,
  "amplify_io": 524288,
  "fs_prefetch": {
    "enable": true,
    "threads_count": 6,
    "merging_size": 262144,
    "bandwidth_rate": 1048576,
    "prefetch_all": false,
    "stream_prefetch": true
  }
}`;

const FS_PREFETCH = {
  enable: true,
  threads: 6,
  batch_size: 262144,
  bandwidth_limit: 1048576,
  prefetch_all: false,
  stream_prefetch: true,
};

const V2_FULL: DaemonConfig = {
  version: 2,
  id: '/snap-1',
  backend: {
    type: 'registry',
    registry: {
      scheme: 'http',
      host: 'localhost:5000',
      repo: 'library/ubuntu',
      auth: 'dXNlcjpwYXNz',
      skip_verify: true,
      ca_cert_files: ['/etc/ssl/certs/my-ca.pem'],
      timeout: 10,
      connect_timeout: 3,
      retry_limit: 2,
      registry_token: 'tok',
      blob_url_scheme: 'https',
      blob_redirected_host: 'blobs.example.com',
      proxy: {
        url: 'http://p2p:65001',
        ping_url: 'http://p2p:40901/server/ping',
        fallback: false,
        check_interval: 5,
        use_http: false,
        check_pause_elapsed: 300,
        dragonfly_scheduler_endpoint: '',
      },
    },
  },
  external_backends: [{ type: 'model', patch: { id: '1' }, config: { k: 'v' } }],
  cache: {
    type: 'filecache',
    compressed: true,
    validate: true,
    // The cache's own prefetch is off, the filesystem's on: upstream copies it over.
    prefetch: FS_PREFETCH,
    filecache: {
      work_dir: '/var/lib/nydus/cache',
      disable_indexed_map: true,
      enable_encryption: false,
      enable_convergent_encryption: false,
      encryption_key: '',
    },
  },
  rafs: {
    mode: 'cached',
    batch_size: 524288,
    validate: true,
    enable_xattr: true,
    iostats_files: true,
    access_pattern: true,
    latest_read_files: true,
    prefetch: FS_PREFETCH,
  },
};

test('v1: every key maps to its v2 place', () => {
  const r = parseDaemonConfig(V1_FULL);
  assert.equal(r.format, 'v1-json');
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(r.config, V2_FULL);
  // The copy is a copy: changing one prefetch does not change the other.
  r.config.cache.prefetch.threads = 1;
  assert.equal(r.config.rafs.prefetch.threads, 6);
});

test('v1: the v2 config it maps to parses to the same thing', () => {
  assert.deepEqual(parseDaemonConfig(JSON.stringify(V2_FULL)).config, V2_FULL);
});

test('v1: defaults of a minimal config', () => {
  const { config } = parseDaemonConfig(
    '{"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct"}',
  );
  assert.deepEqual(config, {
    version: 2,
    id: '',
    backend: { type: 'localfs', localfs: { blob_file: '', dir: '/b', alt_dirs: [] } },
    external_backends: [],
    cache: {
      type: 'dummycache',
      compressed: false,
      validate: false,
      // BlobPrefetchConfig::default() converted: off, zero, prefetch_all true.
      prefetch: {
        enable: false,
        threads: 0,
        batch_size: 0,
        bandwidth_limit: 0,
        prefetch_all: true,
        stream_prefetch: false,
      },
    },
    rafs: {
      mode: 'direct',
      batch_size: 1048576,
      validate: false,
      enable_xattr: false,
      iostats_files: false,
      access_pattern: false,
      latest_read_files: false,
      // No fs_prefetch: FsPrefetchControl::default(), all off and zero.
      prefetch: {
        enable: false,
        threads: 0,
        batch_size: 0,
        bandwidth_limit: 0,
        prefetch_all: false,
        stream_prefetch: false,
      },
    },
  });
});

test('v1: an empty fs_prefetch takes serde defaults, prefetch_all true', () => {
  const { config } = parseDaemonConfig(
    '{"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct", "fs_prefetch": {}}',
  );
  assert.deepEqual(config.rafs.prefetch, {
    enable: false,
    threads: 8,
    batch_size: 1048576,
    bandwidth_limit: 0,
    prefetch_all: true,
    stream_prefetch: false,
  });
});

test('v1: cache type spellings and their config table', () => {
  const cache = (c: Record<string, unknown>): DaemonConfig['cache'] =>
    parseDaemonConfig(
      JSON.stringify({
        device: { backend: { type: 'localfs', config: { dir: '/b' } }, cache: c },
        mode: 'direct',
      }),
    ).config.cache;
  assert.equal(cache({ type: 'blobcache', config: { work_dir: '/c' } }).filecache?.work_dir, '/c');
  assert.equal(cache({ type: 'filecache', config: { work_dir: '/c' } }).filecache?.work_dir, '/c');
  assert.equal(cache({ type: 'filecache', config: {} }).filecache?.work_dir, '.');
  assert.deepEqual(cache({ type: 'fscache', config: { work_dir: '/f' } }).fscache, { work_dir: '/f' });
  const none = cache({ type: 'dummycache', config: { work_dir: '/c' } });
  assert.equal(none.type, 'dummycache');
  assert.equal(none.filecache, undefined);
  assert.equal(cache({}).type, 'dummycache');
});

test('v1: every backend type, including http-proxy (upstream v1 rejects it)', () => {
  const backend = (type: string, config: Record<string, unknown>): DaemonConfig['backend'] =>
    parseDaemonConfig(JSON.stringify({ device: { backend: { type, config } }, mode: 'direct' })).config
      .backend;
  assert.equal(backend('localdisk', { device_path: '/dev/loop1' }).localdisk?.device_path, '/dev/loop1');
  assert.equal(backend('oss', { endpoint: 'e', bucket_name: 'b' }).oss?.bucket_name, 'b');
  assert.equal(backend('s3', { region: 'r', bucket_name: 'b' }).s3?.region, 'r');
  assert.equal(
    backend('http-proxy', { addr: 'http://127.0.0.1:9977' })['http-proxy']?.addr,
    'http://127.0.0.1:9977',
  );
});

test('v1: unknown keys warn by their v1 path, in document order (snapshotter and doc keys among them)', () => {
  const { warnings, format } = parseDaemonConfig(`{
    "device": {
      "backend": { "type": "localfs", "config": { "dir": "/b", "readahead": true, "readahead_sec": 10 } },
      "external_backend": { "config_path": "/x/backend.json" },
      "digest_validate": false,
      "cache": { "type": "blobcache", "config": { "work_dir": "/c", "compressed": false }, "extra": 1 }
    },
    "mode": "direct",
    "fs_prefetch": { "enable": false, "threads": 4 },
    "warmup": 100,
    "id_mapping": [0, 1000, 65536]
  }`);
  assert.equal(format, 'v1-json');
  assert.deepEqual(warnings, [
    'device.backend.config.readahead: unknown key, ignored',
    'device.backend.config.readahead_sec: unknown key, ignored',
    'device.external_backend: unknown key, ignored',
    'device.digest_validate: unknown key, ignored',
    'device.cache.config.compressed: unknown key, ignored',
    'device.cache.extra: unknown key, ignored',
    'fs_prefetch.threads: unknown key, ignored',
    'warmup: unknown key, ignored',
    'id_mapping: unknown key, ignored',
  ]);
});

function refusesV1(doc: Record<string, unknown>, ...problems: string[]): void {
  assert.throws(
    () => parseDaemonConfig(JSON.stringify(doc), { source: 'v1.json' }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.deepEqual(e.problems, problems);
      return true;
    },
  );
}

const LOCALFS = { type: 'localfs', config: { dir: '/b' } };

test('v1: refusals name the v1 key', () => {
  refusesV1(
    { device: { backend: LOCALFS }, mode: 'fast' },
    'mode: expected "direct" or "cached", got "fast"',
  );
  refusesV1(
    { device: { backend: LOCALFS }, digest_validate: 1 },
    'digest_validate: expected true or false, got 1',
  );
  refusesV1(
    { device: { backend: LOCALFS }, amplify_io: 0x10000001 },
    'amplify_io: must be 0..268435456, got 268435457',
  );
  refusesV1(
    { device: { backend: LOCALFS }, fs_prefetch: { enable: true, threads_count: 0 } },
    'fs_prefetch.threads_count: must be 1..1024, got 0',
  );
  refusesV1(
    { device: { backend: LOCALFS }, fs_prefetch: { enable: true, merging_size: 0x10000001 } },
    'fs_prefetch.merging_size: must be 0..268435456, got 268435457',
  );
  refusesV1(
    { device: { backend: LOCALFS }, fs_prefetch: { bandwidth_rate: 'fast' } },
    'fs_prefetch.bandwidth_rate: expected an integer, got "fast"',
  );
  refusesV1({ device: { backend: LOCALFS }, fs_prefetch: 1 }, 'fs_prefetch: expected an object, got 1');
  refusesV1(
    { device: { backend: { type: 'localfs', config: {} } } },
    'device.backend.config: needs "dir" or "blob_file"',
  );
  refusesV1(
    { device: { backend: { type: 'localfs' } } },
    'device.backend.config: needs "dir" or "blob_file"',
  );
  refusesV1(
    { device: { backend: { type: 'registry', config: { host: 'h' } } } },
    'device.backend.config: needs "repo"',
  );
  refusesV1(
    {
      device: { backend: { type: 'registry', config: { host: 'h', repo: 'r', proxy: { fallback: 'no' } } } },
    },
    'device.backend.config.proxy.fallback: expected true or false, got "no"',
  );
  refusesV1(
    { device: { backend: { type: 'localfs', config: 'dir' } } },
    'device.backend.config: expected an object, got "dir"',
  );
  refusesV1(
    { device: { backend: { type: 'nfs', config: {} } } },
    'device.backend.type: expected one of "localfs", "localdisk", "oss", "s3", "registry", "http-proxy", got "nfs"',
  );
  refusesV1(
    { device: { backend: { config: {} } } },
    'device.backend.type: missing, expected one of "localfs", "localdisk", "oss", "s3", "registry", "http-proxy"',
  );
  refusesV1({ device: {} }, 'device.backend: missing, expected an object');
  refusesV1({ device: 5 }, 'device: expected an object, got 5');
  refusesV1(
    { device: { backend: LOCALFS, cache: 'blobcache' } },
    'device.cache: expected an object, got "blobcache"',
  );
  refusesV1(
    { device: { backend: LOCALFS, cache: { type: 'blobcache' } } },
    'device.cache.config: needs "work_dir"',
  );
  refusesV1(
    { device: { backend: LOCALFS, cache: { type: 'blobcache', config: { work_dir: 7 } } } },
    'device.cache.config.work_dir: expected a string, got 7',
  );
  refusesV1(
    { device: { backend: LOCALFS, cache: { type: 7 } } },
    'device.cache.type: expected one of "", "dummycache", "blobcache", "filecache", "fscache", got 7',
  );
  refusesV1({ device: { id: 1, backend: LOCALFS } }, 'device.id: expected a string, got 1');
  refusesV1(
    { device: { backend: LOCALFS, external_backends: [{ type: 'x' }] } },
    'device.external_backends[0].patch: missing, expected an object',
    'device.external_backends[0].config: missing, expected an object',
  );
});

test('v1: "version" beside "device" makes it a v2 config, as upstream', () => {
  // Upstream's v2 serde parse succeeds first (unknown "device" ignored), then validate() fails.
  assert.throws(
    () => parseDaemonConfig(JSON.stringify({ version: 1, device: { backend: LOCALFS }, mode: 'direct' })),
    { message: 'Invalid config: version: expected 2, got 1; backend: missing, expected an object' },
  );
});

test('v1: is JSON only; TOML is always v2', () => {
  assert.throws(() => parseDaemonConfig('mode = "direct"\n[device.backend]\ntype = "localfs"'), {
    message: 'Invalid config: version: missing, expected 2; backend: missing, expected an object',
  });
});
