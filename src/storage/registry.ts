import { errorText, NydusError } from '../errors/errors.js';
import type { BlobInfo } from '../format/model.js';
import type { Logger } from '../log/logger.js';
import type { BlobReader, BlobSource, ReadOptions } from './blob-source.js';
import { Connection, NYDUSD_USER_AGENT, type MirrorConfig } from './remote/connection.js';
import { Limiter } from './remote/http-blob.js';
import type { ProxyConfig } from '../daemon/config/schema.js';
import { decodeUserPassword, type Credentials } from '../registry/docker-config.js';
import { RegistryClient, type Repository, type RegistryOptions } from '../registry/client.js';

export { NYDUSD_USER_AGENT };

/** Ranged requests one registry backend keeps in flight at most. */
const DEFAULT_MAX_INFLIGHT = 8;
/** On-demand reads get this many retries when `retry_limit` asks for fewer (upstream's fixed budget). */
const MIN_RETRIES = 3;

/** The registry backend's settings (the `registry` table of a daemon config, upstream names). */
export interface RegistryBackendConfig {
  scheme: string;
  host: string;
  repo: string;
  auth?: string | undefined;
  registry_token?: string | undefined;
  skip_verify: boolean;
  ca_cert_files: readonly string[];
  /** Seconds. */
  timeout: number;
  /** Seconds. */
  connect_timeout: number;
  retry_limit: number;
  blob_url_scheme: string;
  blob_redirected_host: string;
  /** P2P proxy (absent: none). */
  proxy?: ProxyConfig | undefined;
  mirrors?: readonly MirrorConfig[] | undefined;
}

const NO_PROXY: ProxyConfig = {
  url: '',
  ping_url: '',
  fallback: true,
  check_interval: 5,
  use_http: false,
  check_pause_elapsed: 300,
  dragonfly_scheduler_endpoint: '',
};

export interface RegistryBackendOptions {
  log?: Logger;
  /** Environment read for `IMAGE_PULL_AUTH` and `NYDUS_HEADER_<Name>` (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Requests in flight at most (default 8). */
  maxInflight?: number;
  /** Failed requests go here (the daemon's events ring). */
  event?: ((message: string) => void) | undefined;
}

/** `user:pass` in base64 (upstream `auth`, `IMAGE_PULL_AUTH`, API `registry_auth`) as credentials. */
export function decodeAuth(auth: string, what: string): Credentials {
  const c = auth.trim() === '' ? undefined : decodeUserPassword(auth.trim());
  if (c === undefined || c.username === '')
    throw new NydusError('ERR_INVALID_ARG', `${what} must be base64 of "username:password"`);
  return c;
}

/** `NYDUS_HEADER_<Name>=<value>` environment entries: extra headers on every backend request. */
export function headersFromEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('NYDUS_HEADER_') && k.length > 'NYDUS_HEADER_'.length && v !== undefined)
      out[k.slice('NYDUS_HEADER_'.length)] = v;
  }
  return out;
}

/**
 * nydusd's `registry` backend: a data blob is the layer `sha256:<blob id>` of `repo` on `host`,
 * read with ranged GETs (the distribution client handles auth, redirects to blob storage,
 * retries and timeouts). Chunk merging, single flight and caching happen above, in the image's
 * fetch engine; this is only "read these bytes of this blob", with a bound on the requests in
 * flight.
 */
export class RegistryBlobSource implements BlobSource {
  readonly client: RegistryClient;
  readonly repo: Repository;
  readonly #limiter: Limiter;
  readonly #log: Logger | undefined;
  /** Blob requests go through this: proxy or mirrors, retry budgets. */
  readonly conn: Connection;

  constructor(cfg: RegistryBackendConfig, opts: RegistryBackendOptions = {}) {
    if (cfg.host === '') throw new NydusError('ERR_INVALID_ARG', 'backend registry needs "host"');
    if (cfg.repo === '') throw new NydusError('ERR_INVALID_ARG', 'backend registry needs "repo"');
    const env = opts.env ?? process.env;
    const pullAuth = env['IMAGE_PULL_AUTH'];
    let credentials: Credentials | undefined;
    if (pullAuth !== undefined && pullAuth !== '') credentials = decodeAuth(pullAuth, 'IMAGE_PULL_AUTH');
    else if (cfg.auth !== undefined && cfg.auth !== '') credentials = decodeAuth(cfg.auth, 'registry "auth"');
    this.#log = opts.log;
    this.conn = new Connection(
      {
        skip_verify: cfg.skip_verify,
        ca_cert_files: cfg.ca_cert_files,
        timeout: Math.max(1, cfg.timeout),
        connect_timeout: Math.max(1, cfg.connect_timeout),
        retry_limit: cfg.retry_limit,
        proxy: cfg.proxy ?? NO_PROXY,
        mirrors: cfg.mirrors,
      },
      {
        userAgent: NYDUSD_USER_AGENT,
        ...(opts.log !== undefined ? { log: opts.log } : {}),
        ...(opts.event !== undefined ? { event: opts.event } : {}),
      },
    );
    const ro: RegistryOptions = {
      connection: this.conn,
      plainHttp: cfg.scheme === 'http',
      insecure: cfg.skip_verify,
      caCertFiles: cfg.ca_cert_files,
      timeoutMs: Math.max(1, cfg.timeout) * 1000,
      connectTimeoutMs: Math.max(1, cfg.connect_timeout) * 1000,
      retries: Math.max(MIN_RETRIES, cfg.retry_limit),
      headers: headersFromEnv(env),
      userAgent: NYDUSD_USER_AGENT,
      // Credentials come only from the config (or IMAGE_PULL_AUTH); without them, anonymous.
      ...(credentials !== undefined ? { credentials } : {}),
      ...(cfg.registry_token !== undefined && cfg.registry_token !== ''
        ? { registryToken: cfg.registry_token }
        : {}),
      ...(cfg.blob_url_scheme !== '' ? { blobUrlScheme: cfg.blob_url_scheme } : {}),
      ...(cfg.blob_redirected_host !== '' ? { blobRedirectedHost: cfg.blob_redirected_host } : {}),
      ...(opts.log !== undefined ? { log: opts.log } : {}),
    };
    this.client = new RegistryClient(cfg.host, ro);
    this.repo = this.client.repository(cfg.repo);
    this.#limiter = new Limiter(opts.maxInflight ?? DEFAULT_MAX_INFLIGHT);
  }

  /** Replace the credentials (API `PUT /api/v1/config` `registry_auth`); cached tokens are dropped. */
  setAuth(auth: string): void {
    this.client.setCredentials(auth === '' ? undefined : decodeAuth(auth, 'registry_auth'));
    this.#log?.info(`registry backend ${this.client.host}/${this.repo.name}: credentials updated`);
  }

  /** Switch the P2P proxy (API `PUT /api/v1/config` `proxy_url`); empty turns it off. */
  setProxyUrl(url: string): void {
    this.conn.setProxyUrl(url);
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    if (!/^[0-9a-f]{64}$/.test(blob.blobId))
      throw new NydusError(
        'ERR_FORMAT',
        `Blob id "${blob.blobId}" is not a sha256 digest, so it cannot name a registry blob`,
      );
    const digest = `sha256:${blob.blobId}`;
    const where = `${this.client.host}/${this.repo.name}@${digest}`;
    let size: number | undefined;
    try {
      size = await this.#limiter.run(() => this.repo.headBlob(digest));
    } catch (e) {
      throw new NydusError(
        e instanceof NydusError ? e.code : 'ERR_IO',
        `Cannot open blob ${where}: ${errorText(e)}`,
        { cause: e },
      );
    }
    if (size === undefined) throw new NydusError('ERR_NOT_FOUND', `Blob ${where} is not in the registry`);
    const repo = this.repo;
    const limiter = this.#limiter;
    return {
      size,
      read(offset: number, length: number, into?: Buffer, opts?: ReadOptions): Promise<Buffer> {
        if (offset < 0 || length < 0 || offset + length > size) {
          return Promise.reject(
            new NydusError(
              'ERR_FORMAT',
              `Read of ${length} bytes at ${offset} is past the end of blob ${where} (${size} bytes)`,
            ),
          );
        }
        if (length === 0) return Promise.resolve(Buffer.alloc(0));
        return limiter.run(() =>
          repo.readBlobRange(digest, offset, length, {
            into,
            prefetch: opts?.prefetch,
            signal: opts?.signal,
          }),
        );
      },
      close: () => Promise.resolve(),
    };
  }

  async close(): Promise<void> {
    await this.client.close();
    await this.conn.close();
  }
}
