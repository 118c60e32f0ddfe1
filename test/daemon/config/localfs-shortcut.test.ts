import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, localfsShortcutConfig, parseDaemonConfig } from '../../../src/daemon/config/index.js';

/** Unit tests of the `nydusd -D/--localfs-dir <dir>` config. */

test('-D: localfs backend and blob cache in the same dir, direct mode, no validation', () => {
  const config = localfsShortcutConfig('/var/lib/nydus/blobs');
  assert.deepEqual(config, {
    version: 2,
    id: '',
    backend: { type: 'localfs', localfs: { blob_file: '', dir: '/var/lib/nydus/blobs', alt_dirs: [] } },
    external_backends: [],
    cache: {
      type: 'filecache',
      compressed: false,
      validate: false,
      prefetch: {
        enable: false,
        threads: 0,
        batch_size: 0,
        bandwidth_limit: 0,
        prefetch_all: true,
        stream_prefetch: false,
      },
      filecache: {
        work_dir: '/var/lib/nydus/blobs',
        disable_indexed_map: false,
        enable_encryption: false,
        enable_convergent_encryption: false,
        encryption_key: '',
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

test("-D: the same as upstream's shortcut JSON text parsed as a config", () => {
  // The text upstream's nydusd builds for -D (src/bin/nydusd/main.rs), dir quoted by {:?}.
  const dir = '/tmp/dir with "quotes"';
  const upstreamText = `{
    "device": {
      "backend": { "type": "localfs", "config": { "dir": ${JSON.stringify(dir)}, "readahead": true } },
      "cache": { "type": "blobcache", "config": { "compressed": false, "work_dir": ${JSON.stringify(dir)} } }
    },
    "mode": "direct",
    "digest_validate": false,
    "iostats_files": false
  }`;
  const parsed = parseDaemonConfig(upstreamText);
  assert.deepEqual(localfsShortcutConfig(dir), parsed.config);
  // Upstream's text carries two keys nydusd then ignores.
  assert.deepEqual(parsed.warnings, [
    'device.backend.config.readahead: unknown key, ignored',
    'device.cache.config.compressed: unknown key, ignored',
  ]);
});

test('-D: an empty dir is refused', () => {
  assert.throws(
    () => localfsShortcutConfig(''),
    (e) =>
      e instanceof ConfigError &&
      e.message ===
        'Invalid config --localfs-dir: device.backend.config: needs "dir" or "blob_file"; device.cache.config: needs "work_dir"',
  );
});
