import { isPlainObject } from './key-path.js';
import {
  BACKEND_TYPES,
  CACHE_TYPE_NAMES,
  DEFAULT_BATCH_SIZE,
  DEFAULT_PREFETCH_THREADS,
  MAX_BATCH_SIZE,
  PREFETCH_OFF,
  RAFS_MODES,
} from './limits.js';
import type { DaemonConfig } from './schema.js';

/**
 * The config schema of schema.ts again, as plain data read by a small checker: it turns a
 * config that is right in every key into exactly what zod's `daemonConfigSchema.parse` gives
 * (same defaults, same key order, same normalization), and gives up (`undefined`) at the first
 * thing it is not sure of: an unknown key, a wrong type, a value out of range, a bigint. Then
 * parse.ts asks zod, which words the messages.
 *
 * Why: zod costs a daemon about 10 MiB of RSS for as long as it runs (its module graph and its
 * schema objects), and the config is parsed once, at start-up; a daemon whose config is right
 * never loads zod. test/daemon/config/fast.test.ts checks that this table and schema.ts agree,
 * key by key and in order, and that both give the same config for every config the tests know.
 */

/** How a key's value is checked and what it becomes when absent. */
type Spec =
  /** A string; `d`: the default (absent: required). */
  | { k: 'str'; d?: string }
  /** upstream `Option<String>`: null or absent mean absent. */
  | { k: 'optStr' }
  | { k: 'bool'; d: boolean }
  /** An integer in `[min, max]`; `d`: the default (absent: required). */
  | { k: 'int'; min: number; max: number; d?: number }
  /** An array of strings, default `[]`. */
  | { k: 'strList' }
  /** An object of strings; `d`: default `{}` (absent: required). */
  | { k: 'strRecord'; d?: true }
  /** One of `values`; `d`: the default; `map` normalizes. */
  | { k: 'enum'; values: readonly (string | number)[]; d?: string; map?: (v: string) => string }
  | { k: 'literal'; v: number | string }
  /**
   * An object. When absent: `required`; `opt`: absent (null too); `prefault`: the object's own
   * defaults (`prefault({})`); `prefaultNull`: the same for null; `off`: a copy of `off`.
   */
  | {
      k: 'obj';
      shape: Shape;
      missing: 'required' | 'opt' | 'prefault' | 'prefaultNull' | 'off';
      off?: Readonly<Record<string, unknown>>;
    }
  /** An array of `of`. When absent: `required`, `opt` (null too) or `empty` (`[]`). */
  | { k: 'array'; of: Spec; missing: 'required' | 'opt' | 'empty' };

type Shape = Readonly<Record<string, Spec>>;

const U8 = 0xff;
const U32 = 0xffffffff;
const UINT = Number.MAX_SAFE_INTEGER;

const str = (d = ''): Spec => ({ k: 'str', d });
const bool = (d = false): Spec => ({ k: 'bool', d });
const int = (max: number, d?: number): Spec =>
  d === undefined ? { k: 'int', min: 0, max } : { k: 'int', min: 0, max, d };
const strList: Spec = { k: 'strList' };
const obj = (shape: Shape, missing: 'required' | 'opt' | 'prefault' | 'prefaultNull' = 'required'): Spec => ({
  k: 'obj',
  shape,
  missing,
});

const proxy: Shape = {
  url: str(),
  ping_url: str(),
  fallback: bool(true),
  check_interval: int(UINT, 5),
  use_http: bool(),
  check_pause_elapsed: int(UINT, 300),
  dragonfly_scheduler_endpoint: str(),
};

const mirror: Shape = {
  host: { k: 'str' },
  ping_url: str(),
  headers: { k: 'strRecord', d: true },
  health_check_interval: int(UINT, 5),
  failure_limit: int(U8, 5),
  health_check_pause_elapsed: int(UINT, 300),
  auth_through: bool(),
};

const network: Shape = {
  skip_verify: bool(),
  ca_cert_files: strList,
  timeout: int(U32, 5),
  connect_timeout: int(U32, 5),
  retry_limit: int(U8, 0),
};

const tail: Shape = {
  proxy: obj(proxy, 'prefault'),
  mirrors: { k: 'array', of: obj(mirror), missing: 'opt' },
};

export const LOCALDISK: Shape = { device_path: str(), disable_gpt: bool() };
export const LOCALFS: Shape = { blob_file: str(), dir: str(), alt_dirs: strList };
const OSS: Shape = {
  scheme: str('https'),
  endpoint: str(),
  bucket_name: str(),
  object_prefix: str(),
  access_key_id: str(),
  access_key_secret: str(),
  ...network,
  ...tail,
};
const S3: Shape = {
  scheme: str('https'),
  endpoint: str(),
  region: str(),
  bucket_name: str(),
  object_prefix: str(),
  access_key_id: str(),
  access_key_secret: str(),
  ...network,
  ...tail,
};
const HTTP_PROXY: Shape = { addr: str(), path: str(), ...network, ...tail };
const REGISTRY: Shape = {
  scheme: str('https'),
  host: str(),
  repo: str(),
  auth: { k: 'optStr' },
  skip_verify: network['skip_verify'] as Spec,
  ca_cert_files: network['ca_cert_files'] as Spec,
  timeout: network['timeout'] as Spec,
  connect_timeout: network['connect_timeout'] as Spec,
  retry_limit: network['retry_limit'] as Spec,
  registry_token: { k: 'optStr' },
  blob_url_scheme: str(),
  blob_redirected_host: str(),
  ...tail,
};

/** The table each backend type reads (schema.ts's BACKEND_TABLE_SCHEMAS). */
export const BACKEND_TABLES: Readonly<Record<string, Shape>> = {
  localfs: LOCALFS,
  localdisk: LOCALDISK,
  oss: OSS,
  s3: S3,
  registry: REGISTRY,
  'http-proxy': HTTP_PROXY,
};

const BACKEND: Shape = {
  type: { k: 'enum', values: BACKEND_TYPES },
  localdisk: obj(LOCALDISK, 'opt'),
  localfs: obj(LOCALFS, 'opt'),
  oss: obj(OSS, 'opt'),
  s3: obj(S3, 'opt'),
  registry: obj(REGISTRY, 'opt'),
  'http-proxy': obj(HTTP_PROXY, 'opt'),
};

const PREFETCH: Spec = {
  k: 'obj',
  shape: {
    enable: bool(),
    threads: int(UINT, DEFAULT_PREFETCH_THREADS),
    batch_size: int(UINT, DEFAULT_BATCH_SIZE),
    bandwidth_limit: int(U32, 0),
    prefetch_all: bool(),
    stream_prefetch: bool(),
  },
  missing: 'off',
  off: PREFETCH_OFF,
};

export const FILECACHE: Shape = {
  work_dir: str('.'),
  disable_indexed_map: bool(),
  enable_encryption: bool(),
  enable_convergent_encryption: bool(),
  encryption_key: str(),
};
export const FSCACHE: Shape = { work_dir: str('.') };

const CACHE: Shape = {
  type: {
    k: 'enum',
    values: CACHE_TYPE_NAMES,
    d: '',
    map: (t) => (t === 'blobcache' ? 'filecache' : t === '' ? 'dummycache' : t),
  },
  compressed: bool(),
  validate: bool(),
  prefetch: PREFETCH,
  filecache: obj(FILECACHE, 'opt'),
  fscache: obj(FSCACHE, 'opt'),
};

const RAFS: Shape = {
  mode: { k: 'enum', values: RAFS_MODES, d: 'direct' },
  batch_size: { k: 'int', min: 0, max: MAX_BATCH_SIZE, d: DEFAULT_BATCH_SIZE },
  validate: bool(),
  enable_xattr: bool(),
  iostats_files: bool(),
  access_pattern: bool(),
  latest_read_files: bool(),
  prefetch: PREFETCH,
};

export const DAEMON_CONFIG: Shape = {
  version: { k: 'literal', v: 2 },
  id: str(),
  backend: obj(BACKEND),
  external_backends: {
    k: 'array',
    of: obj({
      patch: { k: 'strRecord' },
      type: { k: 'str' },
      config: { k: 'strRecord' },
    }),
    missing: 'empty',
  },
  cache: obj(CACHE, 'prefaultNull'),
  rafs: obj(RAFS, 'prefaultNull'),
  overlay: obj({ upper_dir: { k: 'str' }, work_dir: { k: 'str' } }, 'opt'),
};

/** Marks "not sure: ask zod". */
const NO: unique symbol = Symbol('no');
/** A checked value (undefined: absent), or NO. */
type Out = string | number | boolean | object | undefined;

/** `v` checked against `s`; `undefined` when absent and absent stays absent; NO when unsure. */
function check(s: Spec, v: unknown): Out | typeof NO {
  if (v === null) {
    // An upstream `Option` given as null is absent; cache and rafs take their defaults.
    if (s.k === 'optStr' || ((s.k === 'obj' || s.k === 'array') && s.missing === 'opt')) return undefined;
    if (s.k === 'obj' && s.missing === 'prefaultNull') return checkObject(s.shape, {});
    return NO;
  }
  if (v === undefined) {
    switch (s.k) {
      case 'str':
      case 'int':
        return s.d ?? NO;
      case 'bool':
        return s.d;
      case 'optStr':
        return undefined;
      case 'strList':
        return [];
      case 'strRecord':
        return s.d === true ? {} : NO;
      case 'enum':
        return s.d === undefined ? NO : s.map !== undefined ? s.map(s.d) : s.d;
      case 'literal':
        return NO;
      case 'obj':
        if (s.missing === 'opt') return undefined;
        if (s.missing === 'prefault' || s.missing === 'prefaultNull') return checkObject(s.shape, {});
        if (s.missing === 'off') return { ...s.off };
        return NO;
      case 'array':
        return s.missing === 'opt' ? undefined : s.missing === 'empty' ? [] : NO;
    }
  }
  switch (s.k) {
    case 'str':
    case 'optStr':
      return typeof v === 'string' ? v : NO;
    case 'bool':
      return typeof v === 'boolean' ? v : NO;
    case 'int':
      return typeof v === 'number' && Number.isInteger(v) && v >= s.min && v <= s.max ? v : NO;
    case 'strList': {
      if (!Array.isArray(v)) return NO;
      for (const x of v) if (typeof x !== 'string') return NO;
      return [...(v as string[])];
    }
    case 'strRecord': {
      if (!isPlainObject(v)) return NO;
      const out: Record<string, string> = {};
      for (const [k, x] of Object.entries(v)) {
        if (typeof x !== 'string' || k === '__proto__') return NO;
        out[k] = x;
      }
      return out;
    }
    case 'enum':
      if (!s.values.includes(v as string)) return NO;
      return s.map !== undefined ? s.map(v as string) : v;
    case 'literal':
      return v === s.v ? v : NO;
    case 'obj':
      return isPlainObject(v) ? checkObject(s.shape, v) : NO;
    case 'array': {
      if (!Array.isArray(v)) return NO;
      const out: unknown[] = [];
      for (const x of v) {
        const c = check(s.of, x);
        if (c === NO || c === undefined) return NO;
        out.push(c);
      }
      return out;
    }
  }
}

function checkObject(shape: Shape, v: Record<string, unknown>): Record<string, unknown> | typeof NO {
  for (const k of Object.keys(v)) if (!Object.hasOwn(shape, k)) return NO;
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(shape)) {
    const c = check(s, v[k]);
    if (c === NO) return NO;
    if (c !== undefined) out[k] = c;
  }
  return out;
}

/**
 * The config zod's `daemonConfigSchema.parse(raw)` would give (keys whose value is undefined
 * left out, as parse.ts prunes them), or undefined when `raw` is not plainly right.
 */
export function fastParseConfig(raw: Record<string, unknown>): DaemonConfig | undefined {
  const c = checkObject(DAEMON_CONFIG, raw);
  return c === NO ? undefined : (c as unknown as DaemonConfig);
}

/** A table with every key at its default (`schema.parse({})`), for the shapes above. */
export function defaults(shape: Shape): Record<string, unknown> {
  const c = checkObject(shape, {});
  if (c === NO) throw new Error('a table with a required key has no defaults');
  return c;
}
