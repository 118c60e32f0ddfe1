import * as z from 'zod';
import { defineSchemas } from './schema-define.js';

/** The zod schemas of the daemon config (schema-define.ts), made with zod's ES module. */
export const {
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
} = defineSchemas(z);

export type DaemonConfig = z.output<typeof daemonConfigSchema>;
export type BackendConfig = DaemonConfig['backend'];
export type CacheConfig = DaemonConfig['cache'];
export type RafsConfig = DaemonConfig['rafs'];
export type PrefetchConfig = z.output<typeof prefetchSchema>;
export type ProxyConfig = z.output<typeof proxySchema>;
export type MirrorConfigV2 = z.output<typeof mirrorSchema>;
export type LocalFsConfig = z.output<typeof localFsSchema>;
export type LocalDiskConfig = z.output<typeof localDiskSchema>;
export type OssConfig = z.output<typeof ossSchema>;
export type S3Config = z.output<typeof s3Schema>;
export type RegistryConfig = z.output<typeof registrySchema>;
export type HttpProxyConfig = z.output<typeof httpProxySchema>;
export type FileCacheConfig = z.output<typeof fileCacheSchema>;
export type FsCacheConfig = z.output<typeof fsCacheSchema>;
export type OverlayConfig = z.output<typeof overlaySchema>;
export type ExternalBackendConfig = z.output<typeof externalBackendSchema>;
