import type { KeyPath } from './key-path.js';
import { BACKEND_TABLES, defaults, FILECACHE, FSCACHE } from './fast.js';
import { BACKEND_TYPES, MAX_BATCH_SIZE, MAX_PREFETCH_THREADS, type BackendType } from './limits.js';
import type { DaemonConfig, FileCacheConfig, FsCacheConfig, PrefetchConfig } from './schema.js';

/**
 * The cross-key rules of upstream's `ConfigV2::validate()` (api/src/config.rs), run on a config
 * whose keys already have the right types, plus normalization: the backend keeps only the table
 * its type reads, the cache only the table its type reads (others are dropped with a warning).
 *
 * - backend: the table named after `backend.type` exists and has its required keys (localfs
 *   `dir` or `blob_file`; localdisk `device_path`; oss `endpoint` and `bucket_name`; s3 `region`
 *   and `bucket_name`; registry `host` and `repo`; http-proxy `addr`, an http(s) URL or an
 *   absolute unix socket path);
 * - cache: `filecache` (also for type `blobcache`) or `fscache` exists with a non-empty
 *   `work_dir`;
 * - an enabled prefetch (cache or rafs) has `threads` in 1..1024 and `batch_size` at most
 *   0x10000000;
 * - a network backend has `mirrors` or a `proxy.url`, not both (the user doc: "The `mirrors`
 *   field conflicts with `proxy` field"); each mirror `host` is an http(s) URL.
 *
 * With `template` (a config that another component completes, like the snapshotter's
 * `--nydusd-config`), the presence checks are skipped and a missing table gets its defaults;
 * type, value and range checks still apply.
 *
 * Difference from upstream: the http-proxy socket path is not checked for existence here (this
 * layer does no I/O); the backend reports a missing socket when it connects.
 */

export interface Finding {
  path: KeyPath;
  message: string;
}

export interface ValidateResult {
  problems: Finding[];
  warnings: Finding[];
}

/** Required keys per backend type; `any` means one of them suffices. */
const REQUIRED: Record<BackendType, { keys: string[]; any?: boolean }> = {
  localfs: { keys: ['dir', 'blob_file'], any: true },
  localdisk: { keys: ['device_path'] },
  oss: { keys: ['endpoint', 'bucket_name'] },
  s3: { keys: ['region', 'bucket_name'] },
  registry: { keys: ['host', 'repo'] },
  'http-proxy': { keys: ['addr'] },
};

const quote = (s: string): string => JSON.stringify(s);

function needs(type: BackendType, table: Record<string, unknown> | undefined): string | undefined {
  const req = REQUIRED[type];
  const empty = req.keys.filter((k) => {
    const v = table?.[k];
    return typeof v !== 'string' || v === '';
  });
  if (req.any === true)
    return empty.length === req.keys.length ? `needs ${req.keys.map(quote).join(' or ')}` : undefined;
  return empty.length > 0 ? `needs ${empty.map(quote).join(' and ')}` : undefined;
}

function checkPrefetch(p: PrefetchConfig, at: KeyPath, problems: Finding[]): void {
  if (!p.enable) return;
  if (p.threads < 1 || p.threads > MAX_PREFETCH_THREADS) {
    problems.push({
      path: [...at, 'threads'],
      message: `must be 1..${MAX_PREFETCH_THREADS}, got ${p.threads}`,
    });
  }
  if (p.batch_size > MAX_BATCH_SIZE) {
    problems.push({
      path: [...at, 'batch_size'],
      message: `must be 0..${MAX_BATCH_SIZE}, got ${p.batch_size}`,
    });
  }
}

export function validateConfig(config: DaemonConfig, opts: { template?: boolean } = {}): ValidateResult {
  const problems: Finding[] = [];
  const warnings: Finding[] = [];
  const template = opts.template === true;

  const backend = config.backend;
  const type = backend.type;
  for (const other of BACKEND_TYPES) {
    if (other !== type && backend[other] !== undefined) {
      warnings.push({ path: ['backend', other], message: `ignored, backend type is ${quote(type)}` });
      delete backend[other];
    }
  }
  if (backend[type] === undefined && template) {
    // Each table gives every key a default, so an empty table parses (fast.ts: as zod's parse).
    (backend as Record<string, unknown>)[type] = defaults(BACKEND_TABLES[type] ?? {});
  }
  const table = backend[type] as Record<string, unknown> | undefined;
  const need = needs(type, table);
  if (need !== undefined && !template) problems.push({ path: ['backend', type], message: need });
  const hp = backend['http-proxy'];
  if (hp !== undefined && hp.addr !== '' && !/^https?:\/\//.test(hp.addr) && !hp.addr.startsWith('/')) {
    problems.push({
      path: ['backend', 'http-proxy', 'addr'],
      message: `expected an "http://" or "https://" URL or an absolute unix socket path, got ${quote(hp.addr)}`,
    });
  }
  if (table !== undefined && Array.isArray(table['mirrors'])) {
    const mirrors = table['mirrors'] as { host: string }[];
    const proxy = table['proxy'] as { url?: string } | undefined;
    if (mirrors.length > 0 && proxy?.url !== undefined && proxy.url !== '') {
      problems.push({
        path: ['backend', type, 'mirrors'],
        message: 'cannot be used together with "proxy"; configure either mirrors or a proxy',
      });
    }
    mirrors.forEach((m, i) => {
      if (!/^https?:\/\/[^/]/.test(m.host)) {
        problems.push({
          path: ['backend', type, 'mirrors', i, 'host'],
          message: `expected an "http://" or "https://" URL, got ${quote(m.host)}`,
        });
      }
    });
  }

  const cache = config.cache;
  const keep = cache.type === 'filecache' ? 'filecache' : cache.type === 'fscache' ? 'fscache' : undefined;
  for (const t of ['filecache', 'fscache'] as const) {
    if (t !== keep && cache[t] !== undefined) {
      warnings.push({ path: ['cache', t], message: `ignored, cache type is ${quote(cache.type)}` });
      delete cache[t];
    }
  }
  if (template) {
    if (keep === 'filecache') cache.filecache ??= defaults(FILECACHE) as FileCacheConfig;
    if (keep === 'fscache') cache.fscache ??= defaults(FSCACHE) as FsCacheConfig;
  } else if (keep !== undefined) {
    const c = cache[keep];
    if (c === undefined || c.work_dir === '')
      problems.push({ path: ['cache', keep], message: 'needs "work_dir"' });
  }
  checkPrefetch(cache.prefetch, ['cache', 'prefetch'], problems);
  checkPrefetch(config.rafs.prefetch, ['rafs', 'prefetch'], problems);

  return { problems, warnings };
}
