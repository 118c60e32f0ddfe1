import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseDaemonConfig, type DaemonConfig } from '../../../src/daemon/config/index.js';
import { extractSeedConfigs, fillElisions, readSeedDocs, type SeedConfig } from './seed-docs.js';

/**
 * Integration with the documents users arrive with: every nydusd config in the seed documents
 * parses, and the localfs and registry ones give the values the documents describe. A config
 * the documents show as a template (placeholders such as an empty bucket, or no registry host
 * and repo, which the snapshotter fills in) parses with `template: true` and is refused without
 * it, naming the missing keys.
 */

interface Expect {
  template?: true;
  /** The refusal without `template`. */
  refusal?: string;
  warnings?: (string | RegExp)[];
  check: (c: DaemonConfig) => void;
}

const V1_CACHE_PREFETCH = {
  enable: false,
  threads: 0,
  batch_size: 0,
  bandwidth_limit: 0,
  prefetch_all: true,
  stream_prefetch: false,
};

const EXPECT: Record<string, Expect> = {
  // Tutorial: registry.json, a local registry over plain HTTP.
  '000_18087fffc96b9287.txt#1': {
    warnings: ['device.digest_validate: unknown key, ignored'],
    check: (c) => {
      assert.equal(c.backend.type, 'registry');
      const r = c.backend.registry;
      assert.ok(r);
      assert.equal(r.scheme, 'http');
      assert.equal(r.host, 'localhost:5000');
      assert.equal(r.repo, 'ubuntu');
      assert.equal(r.auth, undefined);
      assert.equal(r.timeout, 5);
      assert.equal(r.proxy.url, '');
      assert.equal(c.rafs.mode, 'direct');
      assert.equal(c.rafs.validate, false);
      assert.equal(c.cache.type, 'dummycache');
    },
  },
  // Tutorial: localfs.json.
  '000_18087fffc96b9287.txt#2': {
    check: (c) => {
      assert.deepEqual(c.backend, {
        type: 'localfs',
        localfs: { blob_file: '', dir: '/media/nvme/user/nydus/image/blobs', alt_dirs: [] },
      });
      assert.equal(c.rafs.mode, 'direct');
      assert.equal(c.cache.type, 'dummycache');
    },
  },
  // README: oss backend with blobcache; empty bucket and keys are placeholders.
  '002_9a6875bedbdfc047.txt#1': {
    template: true,
    refusal: 'device.backend.config: needs "bucket_name"',
    check: (c) => {
      assert.equal(c.backend.oss?.endpoint, 'region.aliyuncs.com');
      assert.equal(c.backend.oss?.scheme, 'https');
      assert.deepEqual(c.cache.filecache?.work_dir, '/cache');
      assert.equal(c.cache.type, 'filecache');
      assert.equal(c.rafs.iostats_files, true);
      assert.deepEqual(c.rafs.prefetch, {
        enable: false,
        threads: 10,
        batch_size: 131072,
        bandwidth_limit: 0,
        prefetch_all: true,
        stream_prefetch: false,
      });
      assert.deepEqual(c.cache.prefetch, V1_CACHE_PREFETCH);
    },
  },
  // README: registry backend.
  '002_9a6875bedbdfc047.txt#2': {
    check: (c) => {
      const r = c.backend.registry;
      assert.ok(r);
      assert.equal(r.scheme, 'https');
      assert.equal(r.host, 'my-registry:5000');
      assert.equal(r.repo, 'test/repo');
      assert.equal(r.auth, '<base64_encoded_auth>');
      assert.equal(r.blob_url_scheme, 'http');
      assert.equal(r.registry_token, undefined);
    },
  },
  // README: localfs with the readahead keys nydusd does not have.
  '002_9a6875bedbdfc047.txt#3': {
    warnings: [
      'device.backend.config.readahead: unknown key, ignored',
      'device.backend.config.readahead_sec: unknown key, ignored',
    ],
    check: (c) => {
      assert.equal(c.backend.localfs?.dir, '/path/to/blobs/');
      assert.equal(c.cache.type, 'dummycache');
    },
  },
  // README: common backend fields in the old flat proxy form, for "any" backend.
  '002_9a6875bedbdfc047.txt#4': {
    template: true,
    refusal: 'device.backend.config: needs "host" and "repo"',
    warnings: [
      'device.backend.config.proxy: a URL string is the old form, read as proxy.url',
      'device.backend.config.proxy_fallback: old form, read as proxy.fallback',
      'device.backend.config.proxy_ping_url: old form, read as proxy.ping_url',
      'device.backend.config.proxy_check_interval: old form, read as proxy.check_interval',
    ],
    check: (c) => {
      const r = c.backend.registry;
      assert.ok(r);
      assert.deepEqual(r.proxy, {
        url: 'http://p2p-proxy:65001',
        ping_url: 'http://p2p-proxy:40901/server/ping',
        fallback: true,
        check_interval: 5,
        use_http: false,
        check_pause_elapsed: 300,
        dragonfly_scheduler_endpoint: '',
      });
      assert.equal(r.timeout, 5);
      assert.equal(r.connect_timeout, 5);
      assert.equal(r.retry_limit, 0);
    },
  },
  // Containerd guide: the snapshotter's nydusd config template (it fills in host and repo).
  '003_e08ff4ceabc8f160.txt#1': {
    template: true,
    refusal: 'device.backend.config: needs "host" and "repo"',
    check: (c) => {
      const r = c.backend.registry;
      assert.ok(r);
      assert.equal(r.scheme, '');
      assert.equal(r.skip_verify, true);
      assert.equal(r.timeout, 5);
      assert.equal(r.connect_timeout, 5);
      assert.equal(r.retry_limit, 4);
      assert.equal(r.auth, '');
      assert.equal(r.host, '');
      assert.equal(c.cache.type, 'filecache');
      assert.equal(c.cache.filecache?.work_dir, 'cache');
      assert.equal(c.rafs.enable_xattr, true);
      const prefetch = {
        enable: true,
        threads: 4,
        batch_size: 1048576,
        bandwidth_limit: 0,
        prefetch_all: true,
        stream_prefetch: false,
      };
      assert.deepEqual(c.rafs.prefetch, prefetch);
      // fs_prefetch is on and the cache's own prefetch off: upstream copies it to the cache.
      assert.deepEqual(c.cache.prefetch, prefetch);
    },
  },
  // nydusd guide: config-localfs.json (trailing comma, no "mode").
  '004_5af761336ba4fd40.txt#1': {
    check: (c) => {
      assert.equal(c.backend.localfs?.dir, '/path/to/blobs');
      assert.equal(c.rafs.mode, 'direct');
    },
  },
  // nydusd guide: common fields, commented; localfs without a dir, with network keys it lacks.
  '004_5af761336ba4fd40.txt#2': {
    template: true,
    refusal: 'device.backend.config: needs "dir" or "blob_file"',
    warnings: [
      'device.backend.config.timeout: unknown key, ignored',
      'device.backend.config.connect_timeout: unknown key, ignored',
      'device.backend.config.retry_limit: unknown key, ignored',
    ],
    check: (c) => {
      assert.equal(c.cache.type, 'filecache');
      assert.equal(c.cache.compressed, true);
      assert.equal(c.cache.filecache?.work_dir, '/cache');
      assert.equal(c.rafs.iostats_files, true);
      assert.equal(c.rafs.enable_xattr, false);
      assert.deepEqual(c.rafs.prefetch, {
        enable: false,
        threads: 10,
        batch_size: 131072,
        bandwidth_limit: 1048576,
        prefetch_all: true,
        stream_prefetch: false,
      });
    },
  },
  // nydusd guide: localfs backend with readahead.
  '004_5af761336ba4fd40.txt#3': {
    warnings: [
      'device.backend.config.readahead: unknown key, ignored',
      'device.backend.config.readahead_sec: unknown key, ignored',
    ],
    check: (c) => assert.equal(c.backend.localfs?.dir, '/path/to/blobs/'),
  },
  // nydusd guide: localdisk backend.
  '004_5af761336ba4fd40.txt#4': {
    check: (c) => assert.deepEqual(c.backend.localdisk, { device_path: '/dev/loop1', disable_gpt: false }),
  },
  // nydusd guide: OSS backend; empty bucket is a placeholder.
  '004_5af761336ba4fd40.txt#5': {
    template: true,
    refusal: 'device.backend.config: needs "bucket_name"',
    check: (c) => assert.equal(c.backend.oss?.endpoint, 'region.aliyuncs.com'),
  },
  // nydusd guide: registry backend (its example forgets a comma).
  '004_5af761336ba4fd40.txt#6': {
    warnings: [/^line \d+: missing "," before "blob_redirected_host", assumed$/],
    check: (c) => {
      const r = c.backend.registry;
      assert.ok(r);
      assert.equal(r.scheme, '');
      assert.equal(r.host, 'my-registry:5000');
      assert.equal(r.repo, 'test/repo');
      assert.equal(r.skip_verify, false);
      assert.equal(r.auth, '<base64_encoded_auth>');
      assert.equal(r.registry_token, '<bearer_token>');
      assert.equal(r.blob_redirected_host, '<blob_redirected_host>');
    },
  },
  // nydusd guide: P2P proxy.
  '004_5af761336ba4fd40.txt#7': {
    template: true,
    refusal: 'device.backend.config: needs "host" and "repo"',
    check: (c) => {
      const p = c.backend.registry?.proxy;
      assert.equal(p?.url, 'http://p2p-proxy:65001');
      assert.equal(p?.fallback, true);
      assert.equal(p?.ping_url, 'http://p2p-proxy:40901/server/ping');
      assert.equal(p?.check_interval, 5);
    },
  },
  // nydusd guide: mirrors (v1 `device.backend.config.mirrors`), with their documented defaults.
  '004_5af761336ba4fd40.txt#8': {
    template: true,
    refusal: 'device.backend.config: needs "host" and "repo"',
    check: (c) => {
      assert.equal(c.backend.type, 'registry');
      const m = c.backend.registry?.mirrors ?? [];
      assert.equal(m.length, 2);
      assert.match(m[0]?.host ?? '', /^http:\/\/[^/]+:65001$/);
      assert.equal(m[0]?.auth_through, false);
      assert.equal(m[0]?.ping_url, 'http://127.0.0.1:40901/server/ping');
      assert.equal(m[0]?.failure_limit, 5);
      assert.equal(m[1]?.health_check_interval, 5);
      assert.equal(m[1]?.health_check_pause_elapsed, 300);
      assert.deepEqual(Object.keys(m[1]?.headers ?? {}), ['X-Dragonfly-Registry']);
    },
  },
  // nydusd guide: http-proxy backend, remote.
  '004_5af761336ba4fd40.txt#9': {
    check: (c) => {
      assert.equal(c.backend.type, 'http-proxy');
      assert.equal(c.backend['http-proxy']?.addr, 'http://127.0.0.1:9977');
      assert.equal(c.backend['http-proxy']?.path, '/namespace/<repo>/blobs');
    },
  },
  // nydusd guide: http-proxy backend over a unix socket.
  '004_5af761336ba4fd40.txt#10': {
    check: (c) => {
      assert.equal(c.backend['http-proxy']?.addr, '/path/to/unix.sock');
      assert.equal(c.backend['http-proxy']?.path, '');
    },
  },
  // nydusd guide: the config string of a POST /api/v1/mount call.
  '004_5af761336ba4fd40.txt#11': {
    check: (c) => {
      assert.equal(c.backend.localfs?.dir, 'blobs');
      assert.equal(c.cache.type, 'filecache');
      assert.equal(c.cache.filecache?.work_dir, 'cache');
      assert.equal(c.rafs.mode, 'direct');
      assert.equal(c.rafs.validate, true);
    },
  },
};

function allSeedConfigs(t: Parameters<typeof readSeedDocs>[0]): SeedConfig[] | undefined {
  return readSeedDocs(t)?.flatMap(extractSeedConfigs);
}

test('seeds: every nydusd config in the seed documents is covered here', (t) => {
  const configs = allSeedConfigs(t);
  if (configs === undefined) return;
  assert.deepEqual(
    configs.map((c) => c.id),
    Object.keys(EXPECT),
  );
});

test('seeds: every config parses, with the documented values and warnings', (t) => {
  const configs = allSeedConfigs(t);
  if (configs === undefined) return;
  for (const sc of configs) {
    const want = EXPECT[sc.id];
    if (want === undefined) continue;
    const text = fillElisions(sc.text);
    let parsed;
    try {
      parsed = parseDaemonConfig(text, { source: sc.id, ...(want.template ? { template: true } : {}) });
    } catch (e) {
      assert.fail(`${sc.id}: ${String(e)}`);
    }
    assert.equal(parsed.format, 'v1-json', sc.id);
    const expected = want.warnings ?? [];
    assert.equal(parsed.warnings.length, expected.length, `${sc.id}: ${parsed.warnings.join(' | ')}`);
    expected.forEach((w, i) => {
      if (typeof w === 'string') assert.equal(parsed.warnings[i], w, sc.id);
      else assert.match(parsed.warnings[i] ?? '', w, sc.id);
    });
    want.check(parsed.config);
    if (want.refusal !== undefined) {
      assert.throws(
        () => parseDaemonConfig(text, { source: sc.id }),
        (e) => e instanceof ConfigError && e.message === `Invalid config ${sc.id}: ${want.refusal}`,
        sc.id,
      );
    }
  }
});

test('seeds: the snapshotter template, once supplemented with host and repo, is a full config', (t) => {
  const configs = allSeedConfigs(t);
  const sc = configs?.find((c) => c.id === '003_e08ff4ceabc8f160.txt#1');
  if (configs === undefined) return;
  assert.ok(sc);
  // What the snapshotter's Supplement() does before it starts nydusd.
  const doc = JSON.parse(sc.text) as { device: { backend: { config: Record<string, unknown> } } };
  doc.device.backend.config['host'] = 'localhost:5000';
  doc.device.backend.config['repo'] = 'ubuntu-nydus';
  const { config, warnings } = parseDaemonConfig(JSON.stringify(doc));
  assert.deepEqual(warnings, []);
  assert.equal(config.backend.registry?.host, 'localhost:5000');
  assert.equal(config.backend.registry?.repo, 'ubuntu-nydus');
});
