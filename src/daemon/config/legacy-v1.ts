import { isPlainObject, type KeyPath } from './key-path.js';
import { BACKEND_TYPES } from './limits.js';
import type { DaemonConfig } from './schema.js';

/**
 * The legacy v1 nydusd config (upstream `RafsConfig`, the `{"device": ...}` JSON that the
 * tutorials, the snapshotter and `nydusctl` still write), laid onto the v2 layout before the v2
 * schema checks it. The mapping is upstream's `TryFrom<RafsConfig> for ConfigV2`:
 *
 * | v1                                  | v2                                         |
 * | ----------------------------------- | ------------------------------------------ |
 * | `device.id`                         | `id`                                       |
 * | `device.backend.type`               | `backend.type`                             |
 * | `device.backend.config`             | `backend.<type>`                           |
 * | `device.external_backends`          | `external_backends`                        |
 * | `device.cache.type/compressed/validate` | `cache.type/compressed/validate`       |
 * | `device.cache.config`               | `cache.filecache` (blobcache, filecache) or `cache.fscache` |
 * | `mode`                              | `rafs.mode`                                |
 * | `digest_validate`                   | `rafs.validate`                            |
 * | `amplify_io`                        | `rafs.batch_size`                          |
 * | `iostats_files`, `enable_xattr`, `access_pattern`, `latest_read_files` | `rafs.<same>` |
 * | `fs_prefetch.{enable, threads_count, merging_size, bandwidth_rate, prefetch_all, stream_prefetch}` | `rafs.prefetch.{enable, threads, batch_size, bandwidth_limit, prefetch_all, stream_prefetch}` |
 *
 * v1 defaults that differ from v2: `fs_prefetch.prefetch_all` defaults to true; the blob-level
 * `cache.prefetch` a v1 config produces is off with `prefetch_all` true, and is replaced by a copy
 * of `rafs.prefetch` when that one is enabled (`copyFsPrefetchToCache`).
 *
 * Differences from upstream, on purpose: `mode` may be omitted (the nydusd guide's own example
 * omits it; upstream requires it) and defaults to "direct"; the `http-proxy` backend type is
 * accepted (the guide shows it in v1 form; upstream's converter rejects it).
 *
 * Messages name v1 keys: `v1PathOf` maps a v2 key path back to the key the user wrote.
 */

const TOP_KEYS = new Set([
  'device',
  'mode',
  'digest_validate',
  'iostats_files',
  'enable_xattr',
  'access_pattern',
  'latest_read_files',
  'amplify_io',
  'fs_prefetch',
]);
const DEVICE_KEYS = new Set(['id', 'backend', 'external_backends', 'cache']);
const BACKEND_KEYS = new Set(['type', 'config']);
const CACHE_KEYS = new Set(['type', 'compressed', 'validate', 'config']);

/** v1 top-level key -> `rafs` key. */
const RAFS_KEYS: Record<string, string> = {
  mode: 'mode',
  digest_validate: 'validate',
  amplify_io: 'batch_size',
  iostats_files: 'iostats_files',
  enable_xattr: 'enable_xattr',
  access_pattern: 'access_pattern',
  latest_read_files: 'latest_read_files',
};
/** v1 `fs_prefetch` key -> prefetch key. */
const PREFETCH_KEYS: Record<string, string> = {
  enable: 'enable',
  threads_count: 'threads',
  merging_size: 'batch_size',
  bandwidth_rate: 'bandwidth_limit',
  prefetch_all: 'prefetch_all',
  stream_prefetch: 'stream_prefetch',
};
const invert = (m: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [v, k]));
const RAFS_KEYS_V1 = invert(RAFS_KEYS);
const PREFETCH_KEYS_V1 = invert(PREFETCH_KEYS);

/** The blob-level prefetch a v1 config yields (upstream `BlobPrefetchConfig::default()` converted). */
const V1_CACHE_PREFETCH = {
  enable: false,
  threads: 0,
  batch_size: 0,
  bandwidth_limit: 0,
  prefetch_all: true,
  stream_prefetch: false,
};

export interface V1Conversion {
  /** The same settings in the v2 layout, not yet checked. Shares sub-objects with the input. */
  v2: Record<string, unknown>;
  /** v1 key paths that are not v1 keys (those inside copied tables are found by the schema). */
  unknown: KeyPath[];
  /** Structural problems found while mapping, by v1 key path. */
  problems: { path: KeyPath; message: string }[];
}

export function isV1Document(doc: Record<string, unknown>): boolean {
  return Object.hasOwn(doc, 'device') && !Object.hasOwn(doc, 'version');
}

/** Lay a v1 document onto the v2 layout. */
export function convertV1(doc: Record<string, unknown>): V1Conversion {
  const unknown: KeyPath[] = [];
  const problems: { path: KeyPath; message: string }[] = [];
  const rafs: Record<string, unknown> = {};
  const cache: Record<string, unknown> = { prefetch: { ...V1_CACHE_PREFETCH } };
  const v2: Record<string, unknown> = { version: 2, cache, rafs };

  for (const [k, v] of Object.entries(doc)) {
    if (!TOP_KEYS.has(k)) unknown.push([k]);
    else if (k in RAFS_KEYS) rafs[RAFS_KEYS[k] as string] = v;
  }

  const prefetch = doc['fs_prefetch'];
  if (isPlainObject(prefetch)) {
    // A present fs_prefetch takes serde's field defaults, which for v1 include prefetch_all.
    const p: Record<string, unknown> = { enable: false, prefetch_all: true };
    for (const [k, v] of Object.entries(prefetch)) {
      const to = PREFETCH_KEYS[k];
      if (to === undefined) unknown.push(['fs_prefetch', k]);
      else p[to] = v;
    }
    rafs['prefetch'] = p;
  } else if (prefetch !== undefined) rafs['prefetch'] = prefetch;

  const device = doc['device'];
  if (!isPlainObject(device)) {
    problems.push({ path: ['device'], message: 'expected an object' });
    return { v2, unknown, problems };
  }
  for (const k of Object.keys(device)) if (!DEVICE_KEYS.has(k)) unknown.push(['device', k]);
  if (device['id'] !== undefined) v2['id'] = device['id'];
  if (device['external_backends'] !== undefined) v2['external_backends'] = device['external_backends'];

  const backend = device['backend'];
  if (backend === undefined) v2['backend'] = undefined;
  else if (!isPlainObject(backend)) v2['backend'] = backend;
  else {
    const b: Record<string, unknown> = { type: backend['type'] };
    for (const k of Object.keys(backend)) if (!BACKEND_KEYS.has(k)) unknown.push(['device', 'backend', k]);
    const t = backend['type'];
    if (typeof t === 'string' && (BACKEND_TYPES as readonly string[]).includes(t)) {
      if (backend['config'] !== undefined && backend['config'] !== null) b[t] = backend['config'];
    }
    v2['backend'] = b;
  }

  const c = device['cache'];
  if (isPlainObject(c)) {
    for (const k of Object.keys(c)) if (!CACHE_KEYS.has(k)) unknown.push(['device', 'cache', k]);
    for (const k of ['type', 'compressed', 'validate']) if (c[k] !== undefined) cache[k] = c[k];
    const cfg = c['config'];
    if (cfg !== undefined && cfg !== null) {
      if (c['type'] === 'blobcache' || c['type'] === 'filecache') cache['filecache'] = cfg;
      else if (c['type'] === 'fscache') cache['fscache'] = cfg;
    }
  } else if (c !== undefined && c !== null) {
    problems.push({ path: ['device', 'cache'], message: 'expected an object' });
  }

  return { v2, unknown, problems };
}

/** The v1 key path a user wrote for a v2 key path of the converted config. */
export function v1PathOf(path: KeyPath): KeyPath {
  const [head, second, ...rest] = path;
  switch (head) {
    case 'id':
      return ['device', 'id'];
    case 'external_backends':
      return ['device', ...path];
    case 'backend':
      if (second === undefined || second === 'type') return ['device', ...path];
      return ['device', 'backend', 'config', ...rest];
    case 'cache':
      if (second === 'filecache' || second === 'fscache') return ['device', 'cache', 'config', ...rest];
      if (second === 'prefetch') return prefetchPath(rest);
      return ['device', ...path];
    case 'rafs':
      if (second === undefined) return [];
      if (second === 'prefetch') return prefetchPath(rest);
      return [RAFS_KEYS_V1[second] ?? second, ...rest];
    default:
      return path;
  }
}

function prefetchPath(rest: KeyPath): KeyPath {
  const [k, ...more] = rest;
  if (k === undefined) return ['fs_prefetch'];
  return ['fs_prefetch', typeof k === 'string' ? (PREFETCH_KEYS_V1[k] ?? k) : k, ...more];
}

/**
 * Upstream copies the filesystem prefetch settings to the blob cache when the cache's own
 * prefetch is off and the filesystem's is on.
 */
export function copyFsPrefetchToCache(config: DaemonConfig): void {
  if (!config.cache.prefetch.enable && config.rafs.prefetch.enable) {
    config.cache.prefetch = { ...config.rafs.prefetch };
  }
}
