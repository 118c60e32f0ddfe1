import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent, Dispatcher } from 'undici';
import { NydusError, errorText, isNydusError } from '../errors/errors.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { registryApiHost } from '../oci/reference.js';
import { RegistryAuth, errorCodes, errorDetail } from './auth.js';
import { credentialsFor, type Credentials } from './docker-config.js';
import { tls, undici } from '../util/lazy-modules.js';

export interface RegistryOptions {
  /** http:// instead of https:// */
  plainHttp?: boolean | undefined;
  /** Skip TLS verification; also allows the HTTPS-to-HTTP fallback. */
  insecure?: boolean | undefined;
  /** CA certificates (PEM files) trusted in addition to the system's. */
  caCertFiles?: readonly string[] | undefined;
  /** Explicit credentials; otherwise looked up with credentialsFor(host). */
  credentials?: Credentials | undefined;
  /** A ready bearer token (nydusd `registry_token`), sent as it is. */
  registryToken?: string | undefined;
  /** Per-request timeout for headers and between body bytes, in ms (default 30000). */
  timeoutMs?: number | undefined;
  /** Connect (TCP + TLS) timeout in ms (default 10000). */
  connectTimeoutMs?: number | undefined;
  /** Retries on connection errors, timeouts and 5xx, with exponential backoff (default 3). */
  retries?: number | undefined;
  /** First backoff delay in ms (default 100; doubled per retry, at most 3 s). */
  retryDelayMs?: number | undefined;
  /** Extra headers for every registry request. */
  headers?: Record<string, string> | undefined;
  userAgent?: string | undefined;
  /** Scheme to use for redirected blob URLs (nydusd `blob_url_scheme`). */
  blobUrlScheme?: string | undefined;
  /** Host to put into redirected blob URLs (nydusd `blob_redirected_host`). */
  blobRedirectedHost?: string | undefined;
  /** Connections per origin kept for parallel requests (default 16). */
  maxConnections?: number | undefined;
  /** Environment for the Docker config lookup (default process.env). */
  env?: NodeJS.ProcessEnv | undefined;
  log?: Logger | undefined;
  /**
   * The backend connection (nydusd): blob requests (`route` set) go through it, so through its
   * P2P proxy or mirrors; everything else (manifests, tokens, uploads) goes direct.
   */
  connection?: BlobConnection | undefined;
}

/**
 * What the client needs of a backend connection to route blob requests through it (nydusd's
 * `storage/remote/connection.ts` Connection is one): send with its proxy and mirrors, retry
 * under its budgets, and hear of a finished read for its slow-request warning.
 */
export interface BlobConnection {
  send(req: {
    method: Method;
    url: URL;
    headers: Record<string, string>;
    body?: Buffer | undefined;
    signal?: AbortSignal | undefined;
    what: string;
    prefetch?: boolean | undefined;
    noProxy?: boolean | undefined;
    noMirrors?: boolean | undefined;
  }): Promise<HttpResponse>;
  withRetries<T>(
    what: string,
    prefetch: boolean,
    fn: (ctx: { attempt: number; noProxy: boolean }) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T>;
  noteDone(what: string, bytes: number, startMs: number): void;
}

/** How a blob request is routed through the backend connection. */
export interface RouteOptions {
  prefetch?: boolean | undefined;
  /** Bypass a fallback proxy (the last retry, a 429). */
  noProxy?: boolean | undefined;
}

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface HttpRequest {
  method: Method;
  /** A path on the registry ("/v2/...") or an absolute URL (upload locations, blob storage). */
  url: string | URL;
  headers?: Record<string, string>;
  body?: Buffer | undefined;
  /** Access scopes the request needs (for bearer tokens). */
  scopes: readonly string[];
  signal?: AbortSignal | undefined;
  /** What is being done, for messages: 'GET manifest "latest" of 127.0.0.1:5000/ns/a'. */
  what: string;
  /** A blob request routed through `RegistryOptions.connection` when there is one. */
  route?: RouteOptions | undefined;
}

export type HttpResponse = Dispatcher.ResponseData;

const transientErrors = new WeakSet<object>();

/** Mark an error as worth retrying (connection trouble, timeouts, 5xx, short bodies). */
export function markTransient<E extends Error>(e: E): E {
  transientErrors.add(e);
  return e;
}

export function isTransient(e: unknown): boolean {
  return typeof e === 'object' && e !== null && transientErrors.has(e);
}

function isAbort(e: unknown): boolean {
  const o = e as { name?: unknown; code?: unknown } | null;
  return o !== null && typeof o === 'object' && (o.name === 'AbortError' || o.code === 'ABORT_ERR');
}

const TIMEOUT_CODES = new Set([
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'ETIMEDOUT',
]);
const CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const PERMANENT_NET_CODES = new Set(['ENOTFOUND', 'EAI_FAIL', 'UND_ERR_INVALID_ARG', 'ERR_INVALID_URL']);

function errCode(e: unknown): string {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : '';
}

/** A URL for messages: no credentials, no query (signed storage URLs carry secrets there). */
export function displayUrl(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname}`;
}

/** Map an error from undici or a body stream to a NydusError (aborts pass through; transient ones marked). */
export function classifyHttpError(
  e: unknown,
  what: string,
  u: URL | undefined,
  connectTimeoutMs: number,
  timeoutMs: number,
): Error {
  if (isNydusError(e) || isAbort(e)) return e as Error;
  const code = errCode(e);
  const where = u !== undefined ? ` (${displayUrl(u)})` : '';
  if (TIMEOUT_CODES.has(code)) {
    const kind =
      code === 'UND_ERR_CONNECT_TIMEOUT'
        ? `could not connect within ${connectTimeoutMs} ms`
        : code === 'UND_ERR_BODY_TIMEOUT'
          ? `the response body stalled for ${timeoutMs} ms`
          : `no response within ${timeoutMs} ms`;
    return markTransient(new NydusError('ERR_TIMEOUT', `${what}${where}: ${kind}`, { cause: e }));
  }
  if (CERT_CODES.has(code) || /certificate/i.test(errorText(e))) {
    return new NydusError(
      'ERR_NETWORK',
      `${what}${where}: TLS certificate verification failed: ${errorText(e)} (trust its CA with caCertFiles / ca_cert_files, or skip verification with insecure / skip_verify)`,
      { cause: e },
    );
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/i.test(errorText(e))) {
    return new NydusError(
      'ERR_NETWORK',
      `${what}${where}: the server does not speak TLS; if it serves plain HTTP use plainHttp (--plain-http), or insecure (skip_verify) to allow the fallback to HTTP`,
      { cause: e },
    );
  }
  const err = new NydusError(
    'ERR_NETWORK',
    `${what}${where}: connection failed: ${errorText(e)}${code !== '' && !errorText(e).includes(code) ? ` (${code})` : ''}`,
    { cause: e },
  );
  return PERMANENT_NET_CODES.has(code) ? err : markTransient(err);
}

/**
 * The CAs a TLS connection trusts: undefined (the system's) without extra files, else the
 * system's plus the PEM files given (`ca_cert_files`); an unreadable file is a clear error.
 */
export function trustedCas(files: readonly string[]): string[] | undefined {
  if (files.length === 0) return undefined;
  const ca = [...tls().rootCertificates];
  for (const f of files) {
    try {
      ca.push(readFileSync(f, 'utf8'));
    } catch (e) {
      throw new NydusError('ERR_INVALID_ARG', `Cannot read CA certificate file "${f}": ${errorText(e)}`, {
        cause: e,
      });
    }
  }
  return ca;
}

/**
 * HTTP to one registry: an undici Agent (kept-alive connections, several in flight), TLS setup,
 * authentication, the HTTPS-to-HTTP fallback, error mapping and retries.
 */
export class Transport {
  readonly host: string;
  readonly apiHost: string;
  scheme: 'http' | 'https';
  readonly agent: Agent;
  readonly auth: RegistryAuth;
  readonly log: Logger;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly retries: number;
  readonly retryDelayMs: number;
  readonly insecure: boolean;
  readonly opts: RegistryOptions;
  /** Blob digest -> redirected storage URL. */
  readonly redirects = new Map<string, string>();
  private fellBack = false;

  constructor(host: string, opts: RegistryOptions = {}) {
    if (host === '' || /[/\s@]/.test(host)) {
      throw new NydusError('ERR_INVALID_ARG', `Invalid registry host "${host}"`);
    }
    this.host = host;
    this.apiHost = registryApiHost(host);
    this.opts = opts;
    this.scheme = opts.plainHttp === true ? 'http' : 'https';
    this.insecure = opts.insecure === true;
    this.log = opts.log ?? silentLogger;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    this.retries = Math.max(0, opts.retries ?? 3);
    this.retryDelayMs = opts.retryDelayMs ?? 100;
    const ca = trustedCas(opts.caCertFiles ?? []);
    this.agent = new (undici().Agent)({
      connect: {
        timeout: this.connectTimeoutMs,
        rejectUnauthorized: !this.insecure,
        ...(ca !== undefined ? { ca } : {}),
      },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      keepAliveTimeout: 30_000,
      connections: opts.maxConnections ?? 16,
    });
    const env = opts.env ?? process.env;
    this.auth = new RegistryAuth({
      host,
      log: this.log,
      registryToken: opts.registryToken,
      loadCredentials: () => credentialsFor(host, env),
      send: (method, url, headers, body) => this.sendSimple(method, url, headers, body),
    });
    if (opts.credentials !== undefined) this.auth.setCredentials(opts.credentials);
  }

  origin(): string {
    return `${this.scheme}://${this.apiHost}`;
  }

  resolve(url: string | URL): URL {
    return url instanceof URL ? url : new URL(url, this.origin());
  }

  private isRegistry(u: URL): boolean {
    return u.host === this.apiHost && (u.protocol === 'http:' || u.protocol === 'https:');
  }

  /** Headers of every request; the configured extra headers go to the registry only. */
  private baseHeaders(toRegistry: boolean): Record<string, string> {
    const h: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'nydus-ts' };
    if (toRegistry) {
      for (const [k, v] of Object.entries(this.opts.headers ?? {})) h[k.toLowerCase()] = v;
    }
    return h;
  }

  /** One undici request, errors mapped to NydusError (transient ones marked). */
  private async dispatch(
    method: Method,
    u: URL,
    headers: Record<string, string>,
    body: Buffer | undefined,
    signal: AbortSignal | undefined,
    what: string,
    route?: RouteOptions,
  ): Promise<HttpResponse> {
    const conn = this.opts.connection;
    if (conn !== undefined && route !== undefined) {
      return conn.send({
        method,
        url: u,
        headers,
        body,
        signal,
        what,
        prefetch: route.prefetch,
        noProxy: route.noProxy,
        // Mirrors stand for the registry, not for the blob storage it redirects to.
        noMirrors: !this.isRegistry(u),
      });
    }
    try {
      return await this.agent.request({
        origin: u.origin,
        path: u.pathname + u.search,
        method,
        headers,
        body: body ?? null,
        ...(signal !== undefined ? { signal } : {}),
      });
    } catch (e) {
      throw this.classify(e, what, u);
    }
  }

  /** Map an error from undici or a body stream to a NydusError (aborts pass through). */
  classify(e: unknown, what: string, u?: URL): Error {
    return classifyHttpError(e, what, u, this.connectTimeoutMs, this.timeoutMs);
  }

  /** Does this HTTPS failure look like the server speaks plain HTTP? */
  private looksLikePlainHttp(e: unknown, u: URL): boolean {
    const cause = (e as { cause?: unknown }).cause ?? e;
    const code = errCode(cause);
    const msg = errorText(cause).toLowerCase();
    if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || msg.includes('wrong version number')) return true;
    if (
      msg.includes('packet length too long') ||
      msg.includes('http request') ||
      msg.includes('http response')
    ) {
      return true;
    }
    // No port given: nothing on 443 may mean the registry serves plain HTTP on 80.
    return code === 'ECONNREFUSED' && u.port === '';
  }

  /**
   * One request to the registry or a URL it gave: attaches authentication (re-authenticating
   * once on a 401), falls back from HTTPS to HTTP when insecure and the server speaks plain HTTP,
   * and throws for 5xx (transient) and 429. Other statuses are the caller's.
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    for (;;) {
      const u = this.resolve(req.url);
      try {
        return await this.requestOnce(req, u);
      } catch (e) {
        if (
          !this.fellBack &&
          this.insecure &&
          this.scheme === 'https' &&
          u.protocol === 'https:' &&
          this.isRegistry(u) &&
          this.looksLikePlainHttp(e, u)
        ) {
          this.fellBack = true;
          this.scheme = 'http';
          this.log.warn(
            `Registry ${this.host} does not speak TLS (${errorText(e)}); falling back to plain HTTP`,
          );
          if (!(req.url instanceof URL) && !/^https?:/i.test(req.url)) continue;
          req = { ...req, url: new URL(u.pathname + u.search, this.origin()) };
          continue;
        }
        throw e;
      }
    }
  }

  private async requestOnce(req: HttpRequest, u: URL): Promise<HttpResponse> {
    const toRegistry = this.isRegistry(u);
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...this.baseHeaders(toRegistry), ...(req.headers ?? {}) };
      let authz: string | undefined;
      if (toRegistry) {
        authz = await this.auth.authorization(req.scopes);
        if (authz !== undefined) headers['authorization'] = authz;
      }
      const res = await this.dispatch(req.method, u, headers, req.body, req.signal, req.what, req.route);
      if (res.statusCode === 401 && toRegistry && attempt === 0) {
        const challenge = headerString(res.headers['www-authenticate']);
        await res.body.dump();
        if (await this.auth.unauthorized(authz, challenge)) continue;
        const creds = await this.auth.getCredentials();
        throw new NydusError(
          'ERR_AUTH',
          creds === undefined
            ? `${req.what}: registry ${this.host} requires authentication and no credentials are configured for it (HTTP 401)`
            : `${req.what}: registry ${this.host} refused ${this.auth.describeCredentials()} (HTTP 401)`,
        );
      }
      if (res.statusCode >= 500 || res.statusCode === 429) {
        const text = await readText(res, 64 * 1024).catch(() => '');
        throw markTransient(
          new NydusError(
            'ERR_REGISTRY',
            `${req.what}: ${toRegistry ? `registry ${this.host}` : displayUrl(u)} answered HTTP ${res.statusCode}${errorDetail(text)}`,
          ),
        );
      }
      return res;
    }
  }

  /** Consume an unexpected response and throw the matching NydusError. */
  async fail(res: HttpResponse, req: HttpRequest, notFound?: string): Promise<never> {
    const text = await readText(res, 64 * 1024).catch(() => '');
    const detail = errorDetail(text);
    const status = res.statusCode;
    const codes = errorCodes(text);
    if (status === 404 || codes.some((c) => c.endsWith('_UNKNOWN') && c !== 'BLOB_UPLOAD_UNKNOWN')) {
      throw new NydusError('ERR_NOT_FOUND', `${notFound ?? req.what}: not found (HTTP ${status}${detail})`);
    }
    if (status === 401) {
      throw new NydusError(
        'ERR_AUTH',
        `${req.what}: registry ${this.host} refused ${this.auth.describeCredentials()} (HTTP 401${detail})`,
      );
    }
    if (status === 403) {
      throw new NydusError(
        'ERR_AUTH',
        `${req.what}: access denied by registry ${this.host} (HTTP 403${detail})`,
      );
    }
    if (codes.includes('DIGEST_INVALID')) {
      throw new NydusError(
        'ERR_DIGEST',
        `${req.what}: registry ${this.host} says the digest is wrong (HTTP ${status}${detail})`,
      );
    }
    const hint =
      status === 400 && /HTTP request to an HTTPS server/i.test(text)
        ? ' (the registry serves HTTPS: do not use plainHttp)'
        : '';
    throw new NydusError(
      'ERR_REGISTRY',
      `${req.what}: registry ${this.host} answered HTTP ${status}${detail}${hint}`,
    );
  }

  /** Run `fn`, retrying transient failures with exponential backoff. */
  async retry<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!isTransient(e) || attempt >= this.retries || signal?.aborted === true) throw e;
        const delay = Math.min(3000, this.retryDelayMs * 2 ** attempt) * (0.75 + Math.random() * 0.5);
        this.log.debug(
          `${what}: ${errorText(e)}; retry ${attempt + 1}/${this.retries} in ${Math.round(delay)} ms`,
        );
        await sleep(delay, undefined, signal !== undefined ? { signal } : undefined);
      }
    }
  }

  /** A small request for the token server: status and text body. */
  private async sendSimple(
    method: 'GET' | 'POST',
    url: URL,
    headers: Record<string, string>,
    body: Buffer | undefined,
  ): Promise<{ status: number; text: string }> {
    const what = `Token request to ${displayUrl(url)}`;
    return this.retry(what, async () => {
      const res = await this.dispatch(
        method,
        url,
        { ...this.baseHeaders(false), ...headers },
        body,
        undefined,
        what,
      );
      let text: string;
      try {
        text = await readText(res, 1024 * 1024);
      } catch (e) {
        throw this.classify(e, what, url);
      }
      if (res.statusCode >= 500) {
        throw markTransient(
          new NydusError('ERR_REGISTRY', `${what}: HTTP ${res.statusCode}${errorDetail(text)}`),
        );
      }
      return { status: res.statusCode, text };
    });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

export function headerString(v: string | string[] | undefined): string | undefined {
  if (Array.isArray(v)) return v.join(', ');
  return v;
}

/**
 * The Content-Range of a 206 answer when it is not the range `first`-`last` that was asked for
 * (undefined when it is, or when the server sent none).
 */
export function otherRange(res: HttpResponse, first: number, last: number): string | undefined {
  const cr = headerString(res.headers['content-range']);
  if (cr === undefined) return undefined;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr.trim());
  return m !== null && Number(m[1]) === first && Number(m[2]) === last ? undefined : cr;
}

/** Drop a response body without reading it (its connection is closed). */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/**
 * Copy the bytes [skip, skip + out.length) of a response body into `out` and return how many
 * arrived (fewer: the body ended early). With `exact` (a 206 answer) a body longer than that
 * is refused: 'long'. Otherwise reading stops once `out` is full; leaving the loop destroys the
 * body, which closes the connection: the rest of a whole blob is not worth reading. Errors of
 * the body stream are thrown as they come; the caller maps them.
 */
export async function copyBodyRange(
  body: Readable,
  out: Buffer,
  skip: number,
  exact: boolean,
): Promise<number | 'long'> {
  const want = out.length;
  let pos = 0; // position in the body
  let got = 0;
  // Leaving the loop early destroys the body: that must not become an uncaught error.
  body.on('error', () => undefined);
  for await (const chunk of body as AsyncIterable<Buffer>) {
    const from = Math.max(0, skip - pos);
    pos += chunk.length;
    if (from >= chunk.length) continue;
    const n = Math.min(chunk.length - from, want - got);
    if (exact && n < chunk.length - from) return 'long';
    chunk.copy(out, got, from, from + n);
    got += n;
    if (!exact && got === want) break;
  }
  return got;
}

/** Read a response body as text, at most `limit` bytes (the rest is discarded). */
export async function readText(res: HttpResponse, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (total < limit) chunks.push(chunk.subarray(0, limit - total));
    total += chunk.length;
  }
  return Buffer.concat(chunks).toString('utf8');
}
