import type * as Z from 'zod';
import {
  BACKEND_TYPES,
  CACHE_TYPE_NAMES,
  DEFAULT_BATCH_SIZE,
  DEFAULT_PREFETCH_THREADS,
  MAX_BATCH_SIZE,
  PREFETCH_OFF,
  RAFS_MODES,
  type CacheType,
} from './limits.js';

/**
 * The nydusd daemon config (upstream `ConfigV2`, api/src/config.rs), declared once. The zod
 * schemas below give the TypeScript types, the defaults and the per-key type checks; the
 * cross-key rules upstream's `validate()` applies (which backend table a type needs, cache work
 * dirs, prefetch ranges) live in validate.ts, and the legacy v1 layout is mapped onto this one
 * in legacy-v1.ts.
 *
 * Keys are declared in upstream's struct order so a serialized config lists them as upstream
 * serializes its own. Every object is strict: a key not declared here is reported (and then
 * dropped) by the parser as "unknown key, ignored". Values that upstream holds in an `Option`
 * also accept `null`, which is how upstream writes an absent one.
 *
 * Defaults, two kinds (upstream's serde quirk, kept so echoed configs match):
 * - a key missing inside a table takes serde's per-field default (`threads` 8, `batch_size`
 *   1 MiB, `timeout` 5, ...);
 * - a prefetch table missing altogether takes Rust's derived `Default`: everything off and zero.
 */

/**
 * The schemas, made from the zod namespace given: schema.ts makes them once with zod's ES module
 * for whoever imports it; parse.ts makes them with zod's CommonJS build (a synchronous require)
 * only when fast.ts gives up on a config, so that a daemon whose config is right never loads zod.
 */
export function defineSchemas(z: typeof Z) {
  const U8_MAX = 0xff;
  const U32_MAX = 0xffffffff;

  /** An integer in `[min, max]`; messages match the rest of the config errors. */
  function int(min: number, max: number) {
    return z.number().superRefine((v, ctx) => {
      if (!Number.isInteger(v)) ctx.addIssue({ code: 'custom', message: `expected an integer, got ${v}` });
      else if (v < min || v > max)
        ctx.addIssue({ code: 'custom', message: `must be ${min}..${max}, got ${v}` });
    });
  }
  const u8 = () => int(0, U8_MAX);
  const u32 = () => int(0, U32_MAX);
  /** usize / u64 fields: any non-negative integer a JS number holds exactly. */
  const uint = () => int(0, Number.MAX_SAFE_INTEGER);
  const str = (dflt = '') => z.string().default(dflt);
  const bool = (dflt = false) => z.boolean().default(dflt);
  const strList = () => z.array(z.string()).default([]);
  /** An upstream `Option<T>`: absent or `null` both mean "none". */
  function opt<T extends Z.ZodType>(schema: T) {
    return z.preprocess((v) => (v === null ? undefined : v), schema.optional());
  }

  const proxySchema = z.strictObject({
    /** Proxy (e.g. Dragonfly dfdaemon) URL; empty means no proxy. */
    url: str(),
    ping_url: str(),
    fallback: bool(true),
    /** Seconds between health checks. */
    check_interval: uint().default(5),
    use_http: bool(),
    /** Seconds of inactivity after which health checks pause. */
    check_pause_elapsed: uint().default(300),
    dragonfly_scheduler_endpoint: str(),
  });

  /**
   * One mirror of a network backend's origin (upstream `MirrorConfig`, a P2P distribution server
   * or another registry). Conflicts with `proxy`.
   */
  const mirrorSchema = z.strictObject({
    /** `scheme://host[:port]` of the mirror. */
    host: z.string(),
    /** Health URL; empty means `<host>/v2`. */
    ping_url: str(),
    /** Headers sent to this mirror only. */
    headers: z.record(z.string(), z.string()).default({}),
    /** Seconds between recovery pings of a disabled mirror. */
    health_check_interval: uint().default(5),
    /** Failures after which the mirror is disabled until a ping succeeds. */
    failure_limit: u8().default(5),
    /** Seconds without requests after which pings pause. */
    health_check_pause_elapsed: uint().default(300),
    /** Also send requests without credentials (the auth exchange) to the mirror. */
    auth_through: bool(),
  });

  /** Keys shared by the network backends (oss, s3, http-proxy, registry), in upstream order. */
  const networkKeys = {
    skip_verify: bool(),
    ca_cert_files: strList(),
    timeout: u32().default(5),
    connect_timeout: u32().default(5),
    retry_limit: u8().default(0),
  };

  /** The last keys of every network backend's table. */
  const tailKeys = {
    proxy: proxySchema.prefault({}),
    /** Absent unless given (upstream dropped the key; a config echo keeps its old shape). */
    mirrors: opt(z.array(mirrorSchema)),
  };

  const localDiskSchema = z.strictObject({
    device_path: str(),
    disable_gpt: bool(),
  });

  const localFsSchema = z.strictObject({
    blob_file: str(),
    dir: str(),
    alt_dirs: strList(),
  });

  const ossSchema = z.strictObject({
    scheme: str('https'),
    endpoint: str(),
    bucket_name: str(),
    object_prefix: str(),
    access_key_id: str(),
    access_key_secret: str(),
    ...networkKeys,
    ...tailKeys,
  });

  const s3Schema = z.strictObject({
    scheme: str('https'),
    /** Optional for AWS, no scheme prefix. (Upstream's serde requires the key; here it defaults to "".) */
    endpoint: str(),
    region: str(),
    bucket_name: str(),
    object_prefix: str(),
    access_key_id: str(),
    access_key_secret: str(),
    ...networkKeys,
    ...tailKeys,
  });

  const httpProxySchema = z.strictObject({
    /** `http://...`, `https://...` or an absolute unix socket path. */
    addr: str(),
    /** URL path prefix of the blobs; ignored over a unix socket. */
    path: str(),
    ...networkKeys,
    ...tailKeys,
  });

  const registrySchema = z.strictObject({
    /** Only `http` switches to plain HTTP. */
    scheme: str('https'),
    host: str(),
    /** `namespace/name`, no tag. */
    repo: str(),
    /** base64 `user:pass`. A secret. */
    auth: opt(z.string()),
    skip_verify: networkKeys.skip_verify,
    ca_cert_files: networkKeys.ca_cert_files,
    timeout: networkKeys.timeout,
    connect_timeout: networkKeys.connect_timeout,
    retry_limit: networkKeys.retry_limit,
    /** Bearer token, preferred over `auth`. A secret. */
    registry_token: opt(z.string()),
    blob_url_scheme: str(),
    blob_redirected_host: str(),
    ...tailKeys,
  });

  /** The schema of the sub-table each backend type reads. */
  const BACKEND_TABLE_SCHEMAS = {
    localfs: localFsSchema,
    localdisk: localDiskSchema,
    oss: ossSchema,
    s3: s3Schema,
    registry: registrySchema,
    'http-proxy': httpProxySchema,
  } as const;

  const backendSchema = z.strictObject({
    type: z.enum(BACKEND_TYPES),
    localdisk: opt(localDiskSchema),
    localfs: opt(localFsSchema),
    oss: opt(ossSchema),
    s3: opt(s3Schema),
    registry: opt(registrySchema),
    'http-proxy': opt(httpProxySchema),
  });

  const prefetchSchema = z.strictObject({
    /**
     * Upstream requires `enable` whenever the table is present; here it defaults to off and the
     * parser warns.
     */
    enable: bool(),
    threads: uint().default(DEFAULT_PREFETCH_THREADS),
    batch_size: uint().default(DEFAULT_BATCH_SIZE),
    /** Bytes per second; 0 = unlimited. */
    bandwidth_limit: u32().default(0),
    prefetch_all: bool(),
    stream_prefetch: bool(),
  });

  const fileCacheSchema = z.strictObject({
    work_dir: str('.'),
    disable_indexed_map: bool(),
    enable_encryption: bool(),
    enable_convergent_encryption: bool(),
    /** 64 hex digits. A secret. */
    encryption_key: str(),
  });

  const fsCacheSchema = z.strictObject({
    work_dir: str('.'),
  });

  function normalizeCacheType(t: (typeof CACHE_TYPE_NAMES)[number]): CacheType {
    if (t === 'blobcache') return 'filecache';
    if (t === '') return 'dummycache';
    return t;
  }

  const cacheSchema = z.strictObject({
    type: z.enum(CACHE_TYPE_NAMES).default('').transform(normalizeCacheType),
    /** Documented as no longer used. */
    compressed: bool(),
    /** Verify chunk digests of data read from the cache. */
    validate: bool(),
    /** Blob-level prefetch. */
    prefetch: prefetchSchema.default(() => ({ ...PREFETCH_OFF })),
    filecache: opt(fileCacheSchema),
    fscache: opt(fsCacheSchema),
  });

  const rafsSchema = z.strictObject({
    mode: z.enum(RAFS_MODES).default('direct'),
    /** User I/O amplification in bytes; 0 = off. */
    batch_size: int(0, MAX_BATCH_SIZE).default(DEFAULT_BATCH_SIZE),
    validate: bool(),
    enable_xattr: bool(),
    iostats_files: bool(),
    access_pattern: bool(),
    latest_read_files: bool(),
    /** Filesystem-level prefetch (prefetch table of the bootstrap, `--prefetch-files`). */
    prefetch: prefetchSchema.default(() => ({ ...PREFETCH_OFF })),
  });

  const overlaySchema = z.strictObject({
    upper_dir: z.string(),
    work_dir: z.string(),
  });

  const externalBackendSchema = z.strictObject({
    patch: z.record(z.string(), z.string()),
    type: z.string(),
    config: z.record(z.string(), z.string()),
  });

  /**
   * The whole v2 config. Unlike upstream, `cache` and `rafs` are filled with their defaults when
   * absent (upstream keeps `None` and fails later, at mount), and `backend` is required.
   */
  const daemonConfigSchema = z.strictObject({
    version: z.literal(2),
    /** Instance id, also the metrics id. */
    id: str(),
    backend: backendSchema,
    external_backends: z.array(externalBackendSchema).default([]),
    cache: z.preprocess((v) => (v === null ? undefined : v), cacheSchema.prefault({})),
    rafs: z.preprocess((v) => (v === null ? undefined : v), rafsSchema.prefault({})),
    overlay: opt(overlaySchema),
  });

  return {
    proxySchema,
    mirrorSchema,
    localDiskSchema,
    localFsSchema,
    ossSchema,
    s3Schema,
    httpProxySchema,
    registrySchema,
    BACKEND_TABLE_SCHEMAS,
    backendSchema,
    prefetchSchema,
    fileCacheSchema,
    fsCacheSchema,
    cacheSchema,
    rafsSchema,
    overlaySchema,
    externalBackendSchema,
    daemonConfigSchema,
  };
}
