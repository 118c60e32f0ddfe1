/**
 * The nydusd configuration layer: one schema (schema.ts) for the v2 config, the legacy v1 layout
 * mapped onto it (legacy-v1.ts), upstream's cross-key rules (validate.ts), the text readers
 * (jsonc.ts, TOML through smol-toml) and the API echo without secrets (redact.ts).
 */
export {
  ConfigError,
  localfsShortcutConfig,
  parseDaemonConfig,
  type ConfigFormat,
  type ParseConfigOptions,
  type ParsedConfig,
} from './parse.js';
export { configApiView, redactConfig } from './redact.js';
export {
  BACKEND_TYPES,
  DEFAULT_BATCH_SIZE,
  DEFAULT_PREFETCH_THREADS,
  MAX_BATCH_SIZE,
  MAX_CONFIG_SIZE,
  MAX_PREFETCH_THREADS,
  PREFETCH_OFF,
  RAFS_MODES,
  type BackendType,
  type CacheType,
} from './limits.js';
// Types only: the zod schemas themselves load on demand (parse.ts), see fast.ts.
export type {
  BackendConfig,
  CacheConfig,
  DaemonConfig,
  ExternalBackendConfig,
  FileCacheConfig,
  FsCacheConfig,
  HttpProxyConfig,
  LocalDiskConfig,
  LocalFsConfig,
  OssConfig,
  OverlayConfig,
  PrefetchConfig,
  ProxyConfig,
  RafsConfig,
  RegistryConfig,
  S3Config,
} from './schema.js';
