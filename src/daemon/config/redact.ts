import type { DaemonConfig } from './schema.js';

/**
 * Configs leave the daemon through the API (`GET /api/v1/daemon` lists every mount's config in
 * `backend_collection`); secrets must not. Upstream's `clone_without_secrets` blanks the OSS keys
 * and drops the registry `auth` and `registry_token`. This also blanks the S3 keys and the file
 * cache `encryption_key`, which upstream echoes (a difference on purpose).
 */
export function redactConfig(config: DaemonConfig): DaemonConfig {
  const c = structuredClone(config);
  const { oss, s3, registry } = c.backend;
  for (const keys of [oss, s3]) {
    if (keys !== undefined) {
      keys.access_key_id = '';
      keys.access_key_secret = '';
    }
  }
  if (registry !== undefined) {
    delete registry.auth;
    delete registry.registry_token;
  }
  if (c.cache.filecache !== undefined) c.cache.filecache.encryption_key = '';
  return c;
}

/**
 * A config as upstream serializes its `ConfigV2` into API responses, secrets removed: every
 * upstream `Option` that is absent is written as `null` (the backend and cache tables not in
 * use, registry `auth` and `registry_token`, `overlay`), keys in upstream's order.
 */
export function configApiView(config: DaemonConfig): Record<string, unknown> {
  const c = redactConfig(config);
  const b = c.backend;
  return {
    version: c.version,
    id: c.id,
    backend: {
      type: b.type,
      localdisk: b.localdisk ?? null,
      localfs: b.localfs ?? null,
      oss: b.oss ?? null,
      s3: b.s3 ?? null,
      registry:
        b.registry === undefined
          ? null
          : {
              scheme: b.registry.scheme,
              host: b.registry.host,
              repo: b.registry.repo,
              auth: null,
              skip_verify: b.registry.skip_verify,
              ca_cert_files: b.registry.ca_cert_files,
              timeout: b.registry.timeout,
              connect_timeout: b.registry.connect_timeout,
              retry_limit: b.registry.retry_limit,
              registry_token: null,
              blob_url_scheme: b.registry.blob_url_scheme,
              blob_redirected_host: b.registry.blob_redirected_host,
              proxy: b.registry.proxy,
            },
      'http-proxy': b['http-proxy'] ?? null,
    },
    external_backends: c.external_backends,
    cache: {
      type: c.cache.type,
      compressed: c.cache.compressed,
      validate: c.cache.validate,
      prefetch: c.cache.prefetch,
      filecache: c.cache.filecache ?? null,
      fscache: c.cache.fscache ?? null,
    },
    rafs: c.rafs,
    overlay: c.overlay ?? null,
  };
}
