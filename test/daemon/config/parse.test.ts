import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NydusError } from '../../../src/errors/errors.js';
import {
  ConfigError,
  MAX_CONFIG_SIZE,
  parseDaemonConfig,
  type DaemonConfig,
} from '../../../src/daemon/config/index.js';

/**
 * Unit tests of parseDaemonConfig on v2 configs: JSON and TOML say the same thing, defaults are
 * upstream's, unknown keys warn with their path, wrong types and values refuse with exact
 * messages, and the limits hold.
 */

function refuses(text: string | Uint8Array, ...problems: string[]): void {
  assert.throws(
    () => parseDaemonConfig(text, { source: 'cfg.json' }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.ok(e instanceof NydusError);
      assert.equal(e.code, 'ERR_INVALID_ARG');
      assert.deepEqual(e.problems, problems);
      assert.equal(e.message, `Invalid config cfg.json: ${problems.join('; ')}`);
      return true;
    },
  );
}

const localfs = (extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ version: 2, backend: { type: 'localfs', localfs: { dir: '/blobs' } }, ...extra });

/** The whole config a minimal v2 localfs config means. */
const MINIMAL: DaemonConfig = {
  version: 2,
  id: '',
  backend: { type: 'localfs', localfs: { blob_file: '', dir: '/blobs', alt_dirs: [] } },
  external_backends: [],
  cache: {
    type: 'dummycache',
    compressed: false,
    validate: false,
    prefetch: {
      enable: false,
      threads: 0,
      batch_size: 0,
      bandwidth_limit: 0,
      prefetch_all: false,
      stream_prefetch: false,
    },
  },
  rafs: {
    mode: 'direct',
    batch_size: 0x100000,
    validate: false,
    enable_xattr: false,
    iostats_files: false,
    access_pattern: false,
    latest_read_files: false,
    prefetch: {
      enable: false,
      threads: 0,
      batch_size: 0,
      bandwidth_limit: 0,
      prefetch_all: false,
      stream_prefetch: false,
    },
  },
};

test("v2: defaults of a minimal config are upstream's", () => {
  const r = parseDaemonConfig(localfs());
  assert.deepEqual(r.config, MINIMAL);
  assert.deepEqual(r.warnings, []);
  assert.equal(r.format, 'v2-json');
});

test("v2: tables present but empty take serde's per-key defaults", () => {
  const { config } = parseDaemonConfig(
    JSON.stringify({
      version: 2,
      backend: { type: 'registry', registry: { host: 'h', repo: 'r' } },
      cache: { type: 'filecache', filecache: {}, prefetch: { enable: true } },
      rafs: { prefetch: { enable: true } },
    }),
  );
  assert.deepEqual(config.backend.registry, {
    scheme: 'https',
    host: 'h',
    repo: 'r',
    skip_verify: false,
    ca_cert_files: [],
    timeout: 5,
    connect_timeout: 5,
    retry_limit: 0,
    blob_url_scheme: '',
    blob_redirected_host: '',
    proxy: {
      url: '',
      ping_url: '',
      fallback: true,
      check_interval: 5,
      use_http: false,
      check_pause_elapsed: 300,
      dragonfly_scheduler_endpoint: '',
    },
  });
  assert.deepEqual(config.cache.filecache, {
    work_dir: '.',
    disable_indexed_map: false,
    enable_encryption: false,
    enable_convergent_encryption: false,
    encryption_key: '',
  });
  const on = {
    enable: true,
    threads: 8,
    batch_size: 0x100000,
    bandwidth_limit: 0,
    prefetch_all: false,
    stream_prefetch: false,
  };
  assert.deepEqual(config.cache.prefetch, on);
  assert.deepEqual(config.rafs.prefetch, on);
});

const TOML = `# a full v2 config
version = 2
id = "my_id"

[backend]
type = "oss"

[backend.oss]
scheme = "http"
endpoint = "my_endpoint"
bucket_name = "my_bucket_name"
object_prefix = "my_object_prefix"
access_key_id = "my_access_key_id"
access_key_secret = "my_access_key_secret"
skip_verify = true
ca_cert_files = ["/etc/ssl/certs/my-ca.pem"]
timeout = 10
connect_timeout = 10
retry_limit = 5

[backend.oss.proxy]
url = "localhost:6789"
ping_url = "localhost:6789/ping"
fallback = false
check_interval = 10
use_http = true

[[external_backends]]
type = "model"
patch = { id = "abc" }
config = { endpoint = "http://x" }

[cache]
type = "fscache"
compressed = true
validate = true

[cache.fscache]
work_dir = "/var/cache/nydus"

[cache.prefetch]
enable = true
threads = 16
batch_size = 1000000
bandwidth_limit = 10000000

[rafs]
mode = "cached"
batch_size = 1000000
validate = true
enable_xattr = true
iostats_files = true
access_pattern = true
latest_read_files = true

[rafs.prefetch]
enable = true
threads = 4
batch_size = 2000000
bandwidth_limit = 5000000
prefetch_all = true
stream_prefetch = true

[overlay]
upper_dir = "/upper"
work_dir = "/work"
`;

const JSON_TWIN = `{
  "version": 2,
  "id": "my_id",
  "backend": {
    "type": "oss",
    "oss": {
      "scheme": "http", "endpoint": "my_endpoint", "bucket_name": "my_bucket_name",
      "object_prefix": "my_object_prefix", "access_key_id": "my_access_key_id",
      "access_key_secret": "my_access_key_secret", "skip_verify": true,
      "ca_cert_files": ["/etc/ssl/certs/my-ca.pem"],
      "timeout": 10, "connect_timeout": 10, "retry_limit": 5,
      "proxy": { "url": "localhost:6789", "ping_url": "localhost:6789/ping", "fallback": false,
                 "check_interval": 10, "use_http": true }
    }
  },
  "external_backends": [{ "type": "model", "patch": { "id": "abc" }, "config": { "endpoint": "http://x" } }],
  "cache": {
    "type": "fscache", "compressed": true, "validate": true,
    "fscache": { "work_dir": "/var/cache/nydus" },
    "prefetch": { "enable": true, "threads": 16, "batch_size": 1000000, "bandwidth_limit": 10000000 }
  },
  "rafs": {
    "mode": "cached", "batch_size": 1000000, "validate": true, "enable_xattr": true,
    "iostats_files": true, "access_pattern": true, "latest_read_files": true,
    "prefetch": { "enable": true, "threads": 4, "batch_size": 2000000, "bandwidth_limit": 5000000,
                  "prefetch_all": true, "stream_prefetch": true }
  },
  "overlay": { "upper_dir": "/upper", "work_dir": "/work" }
}`;

test('v2: TOML and JSON say the same thing', () => {
  const t = parseDaemonConfig(TOML);
  const j = parseDaemonConfig(JSON_TWIN);
  assert.equal(t.format, 'v2-toml');
  assert.equal(j.format, 'v2-json');
  assert.deepEqual(t.warnings, []);
  assert.deepEqual(j.warnings, []);
  assert.deepEqual(t.config, j.config);
  const c = t.config;
  assert.equal(c.id, 'my_id');
  assert.equal(c.backend.oss?.proxy.fallback, false);
  assert.equal(c.backend.oss?.proxy.check_pause_elapsed, 300);
  assert.deepEqual(c.external_backends, [
    { type: 'model', patch: { id: 'abc' }, config: { endpoint: 'http://x' } },
  ]);
  assert.deepEqual(c.cache.fscache, { work_dir: '/var/cache/nydus' });
  assert.deepEqual(c.cache.prefetch, {
    enable: true,
    threads: 16,
    batch_size: 1000000,
    bandwidth_limit: 10000000,
    prefetch_all: false,
    stream_prefetch: false,
  });
  assert.equal(c.rafs.mode, 'cached');
  assert.deepEqual(c.overlay, { upper_dir: '/upper', work_dir: '/work' });
});

test('v2: TOML dotted keys, as upstream writes its -D config', () => {
  const { config } = parseDaemonConfig(`
    version = 2
    id = "x"
    backend.type = "localfs"
    backend.localfs.dir = "/d"
    cache.type = "filecache"
    cache.compressed = false
    cache.validate = false
    cache.filecache.work_dir = "/d"
  `);
  assert.equal(config.backend.localfs?.dir, '/d');
  assert.equal(config.cache.type, 'filecache');
  assert.equal(config.cache.filecache?.work_dir, '/d');
});

test('v2: cache type spellings', () => {
  const withCache = (cache: Record<string, unknown>): DaemonConfig =>
    parseDaemonConfig(localfs({ cache })).config;
  assert.equal(withCache({ type: 'blobcache', filecache: { work_dir: '/c' } }).cache.type, 'filecache');
  assert.equal(withCache({ type: 'filecache', filecache: { work_dir: '/c' } }).cache.type, 'filecache');
  assert.equal(withCache({ type: 'fscache', fscache: { work_dir: '/c' } }).cache.type, 'fscache');
  assert.equal(withCache({ type: 'dummycache' }).cache.type, 'dummycache');
  assert.equal(withCache({ type: '' }).cache.type, 'dummycache');
  assert.equal(withCache({}).cache.type, 'dummycache');
});

test('v2: comments and trailing commas in JSON', () => {
  const { config, warnings } = parseDaemonConfig(`{
    // instance
    "version": 2, /* must be 2 */
    "backend": { "type": "localfs", "localfs": { "dir": "/b//c", }, },
  }`);
  assert.equal(config.backend.localfs?.dir, '/b//c');
  assert.deepEqual(warnings, []);
});

test('v2: unknown keys warn with their path, in document order, and are dropped', () => {
  const { config, warnings } = parseDaemonConfig(`{
    "version": 2,
    "colour": "blue",
    "backend": {
      "type": "registry",
      "registry": { "host": "h", "mirror": [{ "host": "m" }], "repo": "r", "proxy": { "urll": "x" } }
    },
    "rafs": { "prefetch": { "enable": false, "threads_count": 4 }, "id_mapping": [0, 1000, 65536] },
    "cache": { "type": "filecache", "enable_encryption": true, "filecache": { "work_dir": "/c" } },
    "a.b": { "nested": { "deeper": 1 } },
    "__proto__": { "polluted": true }
  }`);
  assert.deepEqual(warnings, [
    'colour: unknown key, ignored',
    'backend.registry.mirror: unknown key, ignored',
    'backend.registry.proxy.urll: unknown key, ignored',
    'rafs.prefetch.threads_count: unknown key, ignored',
    'rafs.id_mapping: unknown key, ignored',
    'cache.enable_encryption: unknown key, ignored',
    '["a.b"]: unknown key, ignored',
    '__proto__: unknown key, ignored',
  ]);
  assert.equal(Object.hasOwn(config, 'colour'), false);
  assert.equal(Object.hasOwn(config.backend.registry ?? {}, 'mirror'), false);
  assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
});

test('v2: tables the chosen type does not read warn and are dropped', () => {
  const { config, warnings } = parseDaemonConfig(`
    version = 2
    [backend]
    type = "localfs"
    [backend.localfs]
    dir = "/tmp"
    [backend.oss]
    endpoint = "e"
    bucket_name = "b"
    [cache]
    type = "filecache"
    [cache.filecache]
    work_dir = "."
    [cache.fscache]
    work_dir = "."
  `);
  assert.deepEqual(warnings, [
    'backend.oss: ignored, backend type is "localfs"',
    'cache.fscache: ignored, cache type is "filecache"',
  ]);
  assert.equal(config.backend.oss, undefined);
  assert.equal(config.cache.fscache, undefined);
});

test('v2: a prefetch table without "enable" means off, with a warning', () => {
  const { config, warnings } = parseDaemonConfig(localfs({ rafs: { prefetch: { threads: 4 } } }));
  assert.equal(config.rafs.prefetch.enable, false);
  assert.equal(config.rafs.prefetch.threads, 4);
  assert.deepEqual(warnings, ['rafs.prefetch.enable: missing, prefetch stays off']);
});

test('v2: null is an absent Option, as upstream serializes one', () => {
  const { config } = parseDaemonConfig(
    JSON.stringify({
      version: 2,
      backend: {
        type: 'registry',
        localfs: null,
        registry: { host: 'h', repo: 'r', auth: null, registry_token: null },
      },
      cache: null,
      rafs: null,
      overlay: null,
    }),
  );
  assert.equal(config.backend.registry?.auth, undefined);
  assert.equal(Object.hasOwn(config.backend.registry ?? {}, 'auth'), false);
  assert.equal(Object.hasOwn(config.backend, 'localfs'), false);
  assert.equal(config.cache.type, 'dummycache');
  assert.equal(config.rafs.mode, 'direct');
  assert.equal(config.overlay, undefined);
});

test('v2: wrong types refuse with the key path and what is wrong', () => {
  refuses(localfs({ rafs: { mode: 'fast' } }), 'rafs.mode: expected "direct" or "cached", got "fast"');
  refuses(localfs({ rafs: { validate: 'yes' } }), 'rafs.validate: expected true or false, got "yes"');
  refuses(localfs({ rafs: { batch_size: 1.5 } }), 'rafs.batch_size: expected an integer, got 1.5');
  refuses(localfs({ rafs: 7 }), 'rafs: expected an object, got 7');
  refuses(localfs({ id: 42 }), 'id: expected a string, got 42');
  refuses(localfs({ overlay: { upper_dir: '/u' } }), 'overlay.work_dir: missing, expected a string');
  refuses(
    localfs({ external_backends: [{ type: 't', patch: { a: 1 }, config: {} }] }),
    'external_backends[0].patch.a: expected a string, got 1',
  );
  refuses(
    JSON.stringify({ version: 2, backend: { type: 'localfs', localfs: { dir: '/d', alt_dirs: ['/a', 5] } } }),
    'backend.localfs.alt_dirs[1]: expected a string, got 5',
  );
  refuses(
    JSON.stringify({
      version: 2,
      backend: { type: 'registry', registry: { host: 'h', repo: 'r', timeout: '5' } },
    }),
    'backend.registry.timeout: expected an integer, got "5"',
  );
  refuses(
    JSON.stringify({
      version: 2,
      backend: { type: 'registry', registry: { host: 'h', repo: 'r', retry_limit: 256 } },
    }),
    'backend.registry.retry_limit: must be 0..255, got 256',
  );
  refuses(
    JSON.stringify({
      version: 2,
      backend: { type: 'oss', oss: { endpoint: 'e', bucket_name: 'b', timeout: -1 } },
    }),
    'backend.oss.timeout: must be 0..4294967295, got -1',
  );
  refuses(
    JSON.stringify({ version: 2, backend: { type: 'ftp' } }),
    'backend.type: expected one of "localfs", "localdisk", "oss", "s3", "registry", "http-proxy", got "ftp"',
  );
  refuses(
    localfs({ cache: { type: 'memcache' } }),
    'cache.type: expected one of "", "dummycache", "blobcache", "filecache", "fscache", got "memcache"',
  );
  refuses('{"version": 2}', 'backend: missing, expected an object');
  refuses(
    '{"version": 1, "backend": {"type": "localfs", "localfs": {"dir": "/d"}}}',
    'version: expected 2, got 1',
  );
  refuses(
    '{"version": "2", "backend": {"type": "localfs", "localfs": {"dir": "/d"}}}',
    'version: expected 2, got "2"',
  );
  refuses(
    'version = 2\n[rafs]\nbatch_size = inf\n[backend]\ntype = "localfs"\nlocalfs.dir = "/d"',
    'rafs.batch_size: expected an integer, got Infinity',
  );
  refuses(
    'version = 2\n[backend]\ntype = "localfs"\nlocalfs.dir = 1979-05-27',
    'backend.localfs.dir: expected a string, got a date',
  );
  refuses(
    'version = 2\n[backend]\ntype = "registry"\nregistry.host = "h"\nregistry.repo = "r"\nregistry.timeout = 99999999999999999999',
    'backend.registry.timeout: expected an integer, got 99999999999999999999',
  );
});

test('v2: several problems are all named', () => {
  refuses(
    localfs({ rafs: { mode: 'fast', iostats_files: 1 }, id: false }),
    'id: expected a string, got false',
    'rafs.mode: expected "direct" or "cached", got "fast"',
    'rafs.iostats_files: expected true or false, got 1',
  );
});

test('v2: each backend type needs its keys', () => {
  const b = (type: string, table?: Record<string, unknown>): string =>
    JSON.stringify({ version: 2, backend: table === undefined ? { type } : { type, [type]: table } });
  refuses(b('localfs'), 'backend.localfs: needs "dir" or "blob_file"');
  refuses(b('localfs', { dir: '' }), 'backend.localfs: needs "dir" or "blob_file"');
  assert.doesNotThrow(() => parseDaemonConfig(b('localfs', { blob_file: '/b' })));
  refuses(b('localdisk', {}), 'backend.localdisk: needs "device_path"');
  refuses(b('oss', {}), 'backend.oss: needs "endpoint" and "bucket_name"');
  refuses(b('oss', { endpoint: 'e' }), 'backend.oss: needs "bucket_name"');
  refuses(b('s3', { endpoint: 'e', bucket_name: 'b' }), 'backend.s3: needs "region"');
  assert.doesNotThrow(() => parseDaemonConfig(b('s3', { region: 'us-east-1', bucket_name: 'b' })));
  refuses(b('registry'), 'backend.registry: needs "host" and "repo"');
  refuses(b('registry', { host: 'h' }), 'backend.registry: needs "repo"');
  refuses(b('http-proxy', {}), 'backend.http-proxy: needs "addr"');
  refuses(
    b('http-proxy', { addr: 'localhost:9977' }),
    'backend.http-proxy.addr: expected an "http://" or "https://" URL or an absolute unix socket path, got "localhost:9977"',
  );
  assert.doesNotThrow(() => parseDaemonConfig(b('http-proxy', { addr: 'https://p' })));
  assert.doesNotThrow(() => parseDaemonConfig(b('http-proxy', { addr: '/run/p.sock' })));
});

test('v2: cache types need their work dir', () => {
  refuses(localfs({ cache: { type: 'filecache' } }), 'cache.filecache: needs "work_dir"');
  refuses(
    localfs({ cache: { type: 'blobcache', filecache: { work_dir: '' } } }),
    'cache.filecache: needs "work_dir"',
  );
  refuses(
    localfs({ cache: { type: 'fscache', filecache: { work_dir: '/c' } } }),
    'cache.fscache: needs "work_dir"',
  );
});

test('v2: prefetch ranges are checked when prefetch is enabled', () => {
  refuses(
    localfs({ cache: { prefetch: { enable: true, threads: 0 } } }),
    'cache.prefetch.threads: must be 1..1024, got 0',
  );
  refuses(
    localfs({ rafs: { prefetch: { enable: true, threads: 1025 } } }),
    'rafs.prefetch.threads: must be 1..1024, got 1025',
  );
  refuses(
    localfs({ rafs: { prefetch: { enable: true, batch_size: 0x10000001 } } }),
    'rafs.prefetch.batch_size: must be 0..268435456, got 268435457',
  );
  refuses(
    localfs({ rafs: { batch_size: 0x10000001 } }),
    'rafs.batch_size: must be 0..268435456, got 268435457',
  );
  // Off, the same values are not checked (upstream checks only an enabled prefetch).
  assert.doesNotThrow(() =>
    parseDaemonConfig(localfs({ cache: { prefetch: { enable: false, threads: 0 } } })),
  );
  assert.doesNotThrow(() => parseDaemonConfig(localfs({ rafs: { batch_size: 0x10000000 } })));
});

test('template: required keys may be missing, types are still checked', () => {
  const text = JSON.stringify({
    version: 2,
    backend: { type: 'registry' },
    cache: { type: 'filecache' },
  });
  refuses(text, 'backend.registry: needs "host" and "repo"', 'cache.filecache: needs "work_dir"');
  const { config } = parseDaemonConfig(text, { template: true });
  assert.equal(config.backend.registry?.host, '');
  assert.equal(config.backend.registry?.scheme, 'https');
  assert.equal(config.cache.filecache?.work_dir, '.');
  assert.throws(
    () =>
      parseDaemonConfig(
        JSON.stringify({ version: 2, backend: { type: 'registry', registry: { timeout: 'x' } } }),
        {
          template: true,
        },
      ),
    /backend\.registry\.timeout: expected an integer, got "x"/,
  );
});

test('text: not a config at all', () => {
  refuses('', 'empty');
  refuses(' \n\t', 'empty');
  refuses('[]', 'expected an object at the top level, got an array');
  refuses('null', 'expected an object at the top level, got null');
  refuses('42', 'expected an object at the top level, got 42');
  refuses('"x"', 'expected an object at the top level, got "x"');
  refuses('{}', 'neither a v2 config ("version": 2) nor a v1 config ("device")');
  refuses('{"mode": "direct"}', 'neither a v2 config ("version": 2) nor a v1 config ("device")');
  refuses(
    '{"version": 2,\n "backend": }',
    'not valid JSON: line 2 column 13: expected a JSON value, got "}"',
  );
  refuses('id = "x"', 'version: missing, expected 2', 'backend: missing, expected an object');
  // The TOML half of the message is smol-toml's wording, so only its place is pinned here.
  assert.throws(() => parseDaemonConfig('version = ', { source: 'cfg.toml' }), {
    message:
      /^Invalid config cfg\.toml: neither JSON \(line 1 column 1: expected a JSON value, got "v"\) nor TOML \(line 1 column 11: [^\n]+\)$/,
  });
});

test('text: size limit is 1 MiB, as upstream', () => {
  const body = localfs();
  const exact = body + ' '.repeat(MAX_CONFIG_SIZE - body.length);
  assert.doesNotThrow(() => parseDaemonConfig(exact));
  refuses(exact + ' ', `${MAX_CONFIG_SIZE + 1} bytes, larger than the ${MAX_CONFIG_SIZE}-byte limit`);
  // Counted in UTF-8 bytes, not UTF-16 units.
  const wide = body + ' '.repeat(MAX_CONFIG_SIZE - body.length - 1) + '\u00e9';
  assert.equal(wide.length, MAX_CONFIG_SIZE);
  refuses(wide, `${MAX_CONFIG_SIZE + 1} bytes, larger than the ${MAX_CONFIG_SIZE}-byte limit`);
  refuses(
    Buffer.alloc(MAX_CONFIG_SIZE + 1, 0x20),
    `${MAX_CONFIG_SIZE + 1} bytes, larger than the ${MAX_CONFIG_SIZE}-byte limit`,
  );
});

test('text: bytes are read as UTF-8, a BOM is skipped', () => {
  const { config } = parseDaemonConfig(Buffer.from('\ufeff' + localfs(), 'utf8'));
  assert.equal(config.backend.localfs?.dir, '/blobs');
  refuses(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 'not UTF-8 text');
});

test('messages without a source', () => {
  assert.throws(() => parseDaemonConfig('[]'), {
    message: 'Invalid config: expected an object at the top level, got an array',
  });
});

test('text: JSON after leading comments is still reported as JSON', () => {
  refuses(
    '// for remote usage\n/* x */ {"version": 2,}}',
    'not valid JSON: line 2 column 24: unexpected "}" after the JSON value',
  );
});

test('v2: the old flat proxy form is read as the proxy table, with warnings', () => {
  const { config, warnings } = parseDaemonConfig(
    JSON.stringify({
      version: 2,
      backend: {
        type: 'registry',
        registry: {
          host: 'h',
          repo: 'r',
          proxy: 'http://p:65001',
          proxy_fallback: false,
          proxy_check_interval: 9,
        },
      },
    }),
  );
  assert.equal(config.backend.registry?.proxy.url, 'http://p:65001');
  assert.equal(config.backend.registry?.proxy.fallback, false);
  assert.equal(config.backend.registry?.proxy.check_interval, 9);
  assert.deepEqual(warnings, [
    'backend.registry.proxy: a URL string is the old form, read as proxy.url',
    'backend.registry.proxy_fallback: old form, read as proxy.fallback',
    'backend.registry.proxy_check_interval: old form, read as proxy.check_interval',
  ]);
  refuses(
    JSON.stringify({
      version: 2,
      backend: { type: 'registry', registry: { host: 'h', repo: 'r', proxy: 5, proxy_fallback: true } },
    }),
    'backend.registry.proxy: expected an object, got 5',
  );
});
