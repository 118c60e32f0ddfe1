import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent, Dispatcher } from 'undici';
import { NydusError, errorText, isNydusError } from '../../errors/errors.js';
import { undici } from '../../util/lazy-modules.js';
import { silentLogger, type Logger } from '../../log/logger.js';
import {
  classifyHttpError,
  displayUrl,
  isTransient,
  markTransient,
  trustedCas,
} from '../../registry/transport.js';
import type { ProxyConfig } from '../../daemon/config/schema.js';

/** What nydusd sends as its User-Agent on every backend request, as upstream. */
export const NYDUSD_USER_AGENT = 'nydusd/1.0.0';

/** One mirror of a backend's origin (upstream `MirrorConfig`). */
export interface MirrorConfig {
  /** `scheme://host[:port]`; replaces the scheme, host and port of origin URLs. */
  host: string;
  /** Send requests without an Authorization header (auth requests) to the mirror too. */
  auth_through: boolean;
  /** Headers sent to this mirror only. */
  headers: Record<string, string>;
  /** Health URL; empty means `<host>/v2`. */
  ping_url: string;
  /** Seconds between recovery pings of a disabled mirror. */
  health_check_interval: number;
  /** Failures after which the mirror is disabled. */
  failure_limit: number;
  /** Seconds without requests after which pings pause. */
  health_check_pause_elapsed: number;
}

/** The network keys of a backend table (upstream names). */
export interface ConnectionConfig {
  skip_verify: boolean;
  ca_cert_files: readonly string[];
  /** Seconds; 0 means none. */
  timeout: number;
  /** Seconds; 0 means none. */
  connect_timeout: number;
  retry_limit: number;
  proxy: ProxyConfig;
  mirrors?: readonly MirrorConfig[] | undefined;
}

export interface ConnectionOptions {
  log?: Logger;
  /** Failed requests go here (the daemon's events ring). */
  event?: (message: string) => void;
  /** Default NYDUSD_USER_AGENT. */
  userAgent?: string;
  /** Extra headers on every request (`NYDUS_HEADER_<Name>`). */
  headers?: Record<string, string>;
  /** The origin is this unix socket (http-proxy backend with a socket `addr`). */
  socketPath?: string;
  maxConnections?: number;
}

export interface SendRequest {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE' | 'PATCH';
  /** The origin URL. */
  url: URL;
  headers: Record<string, string>;
  body?: Buffer | undefined;
  signal?: AbortSignal | undefined;
  /** For messages: 'GET blob <id> bytes a-b of s3 bucket "b"'. */
  what: string;
  /** A prefetch request (proxy priority, budgets). */
  prefetch?: boolean | undefined;
  /** Bypass proxy and mirrors (token requests, uploads). */
  direct?: boolean | undefined;
  /** Bypass the proxy (a fallback proxy only) but not the mirrors: set on the last retry and after a 429. */
  noProxy?: boolean | undefined;
  /** Do not send to mirrors (a URL that is not the origin's, like a redirect to blob storage). */
  noMirrors?: boolean | undefined;
  /** Called with the URL actually used (a mirror rewrites scheme/host/port) before each send. */
  sign?: ((url: URL, headers: Record<string, string>) => void) | undefined;
}

export type Response = Dispatcher.ResponseData;

/** Upstream's process-wide limiter of requests that bypass the proxy: 1 per second. */
class QpsLimiter {
  #next = 0;
  readonly #gapMs: number;

  constructor(qps: number) {
    this.#gapMs = 1000 / qps;
  }

  /** Wait for a token; true when the caller had to wait. */
  async acquire(signal?: AbortSignal): Promise<boolean> {
    const now = Date.now();
    const at = Math.max(now, this.#next);
    this.#next = at + this.#gapMs;
    if (at <= now) return false;
    await sleep(at - now, undefined, signal !== undefined ? { signal } : undefined);
    return true;
  }
}

/** Shared by every connection of the process, as upstream's BACKEND_QPS_LIMITER. */
export const BACKEND_QPS_LIMITER = new QpsLimiter(1);

/** Seconds between two "proxy is not healthy" warnings. */
const FALLBACK_LOG_GAP_MS = 2000;

interface ProxyState {
  url: URL;
  pingUrl: string;
  fallback: boolean;
  useHttp: boolean;
  checkIntervalS: number;
  pauseS: number;
  healthy: boolean;
  timer: NodeJS.Timeout | undefined;
}

interface MirrorState {
  cfg: MirrorConfig;
  base: URL;
  pingUrl: string;
  enabled: boolean;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

function hasHeader(h: Record<string, string>, name: string): boolean {
  const n = name.toLowerCase();
  return Object.keys(h).some((k) => k.toLowerCase() === n);
}

function setHeader(h: Record<string, string>, name: string, value: string): void {
  const n = name.toLowerCase();
  for (const k of Object.keys(h)) if (k.toLowerCase() === n) delete h[k];
  h[n] = value;
}

/** A URL with the scheme, host and port of `base` (a mirror). */
function rebase(u: URL, base: URL): URL {
  return new URL(`${base.protocol}//${base.host}${u.pathname}${u.search}`);
}

/** Status of a response that an HTTP proxy / mirror failed to serve: move on to the next route. */
function serverFailed(status: number): boolean {
  return status >= 500;
}

/**
 * The HTTP client of one network backend (upstream `Connection`): kept-alive connections to the
 * origin, TLS setup, the optional P2P proxy (Dragonfly headers, health checks, fallback) or the
 * mirror list (failure limits, recovery pings), and the retry budgets of upstream's `retry_op`.
 */
export class Connection {
  readonly #cfg: ConnectionConfig;
  readonly #log: Logger;
  readonly #event: ((message: string) => void) | undefined;
  readonly #userAgent: string;
  readonly #headers: Record<string, string>;
  readonly #agent: Agent;
  readonly #sockAgent: Agent | undefined;
  readonly #mirrors: MirrorState[] = [];
  #proxy: ProxyState | undefined;
  #lastActive = Date.now();
  #lastFallbackLog = 0;
  #closed = false;

  constructor(cfg: ConnectionConfig, opts: ConnectionOptions = {}) {
    this.#cfg = cfg;
    this.#log = opts.log ?? silentLogger;
    this.#event = opts.event;
    this.#userAgent = opts.userAgent ?? NYDUSD_USER_AGENT;
    this.#headers = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) this.#headers[k.toLowerCase()] = v;
    const proxyUrl = cfg.proxy.url;
    const mirrors = (cfg.mirrors ?? []).filter((m) => m.host !== '');
    if (proxyUrl !== '' && mirrors.length > 0) {
      throw new NydusError('ERR_INVALID_ARG', 'backend "mirrors" and "proxy" cannot be used together');
    }
    const ca = trustedCas(cfg.ca_cert_files);
    const timeouts = {
      headersTimeout: cfg.timeout > 0 ? cfg.timeout * 1000 : 0,
      bodyTimeout: cfg.timeout > 0 ? cfg.timeout * 1000 : 0,
      keepAliveTimeout: 30_000,
      connections: opts.maxConnections ?? 16,
    };
    const connectTimeout = cfg.connect_timeout > 0 ? cfg.connect_timeout * 1000 : 0;
    this.#agent = new (undici().Agent)({
      connect: {
        timeout: connectTimeout,
        rejectUnauthorized: !cfg.skip_verify,
        ...(ca !== undefined ? { ca } : {}),
      },
      ...timeouts,
    });
    if (opts.socketPath !== undefined) {
      this.#sockAgent = new (undici().Agent)({
        connect: { socketPath: opts.socketPath, timeout: connectTimeout },
        ...timeouts,
      });
    }
    for (const m of mirrors) {
      let base: URL;
      try {
        base = new URL(m.host);
      } catch {
        throw new NydusError(
          'ERR_INVALID_ARG',
          `Invalid mirror host "${m.host}": expected a URL like "http://127.0.0.1:65001"`,
        );
      }
      const st: MirrorState = {
        cfg: m,
        base,
        pingUrl: m.ping_url !== '' ? m.ping_url : `${m.host.replace(/\/+$/, '')}/v2`,
        enabled: true,
        failures: 0,
        timer: undefined,
      };
      this.#mirrors.push(st);
      this.#startMirrorPings(st);
    }
    if (proxyUrl !== '') this.#setProxy(proxyUrl);
  }

  /** Whether a proxy is in use and healthy (for tests and messages). */
  get proxyHealthy(): boolean | undefined {
    return this.#proxy?.healthy;
  }

  /** Enabled state of each mirror, in order. */
  get mirrorStates(): { host: string; enabled: boolean; failures: number }[] {
    return this.#mirrors.map((m) => ({ host: m.cfg.host, enabled: m.enabled, failures: m.failures }));
  }

  #setProxy(url: string): void {
    if (this.#proxy?.timer !== undefined) clearInterval(this.#proxy.timer);
    this.#proxy = undefined;
    if (url === '') return;
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new NydusError('ERR_INVALID_ARG', `Invalid proxy url "${url}"`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new NydusError('ERR_INVALID_ARG', `Invalid proxy url "${url}": expected http:// or https://`);
    const p = this.#cfg.proxy;
    const st: ProxyState = {
      url: u,
      pingUrl: p.ping_url,
      fallback: p.fallback,
      useHttp: p.use_http,
      checkIntervalS: p.check_interval,
      pauseS: p.check_pause_elapsed,
      healthy: true,
      timer: undefined,
    };
    this.#proxy = st;
    if (st.pingUrl !== '' && st.checkIntervalS > 0) {
      const tick = (): void => {
        if (this.#closed || this.#proxy !== st) return;
        if (Date.now() - this.#lastActive > st.pauseS * 1000) return;
        void this.#ping(st.pingUrl).then((ok) => {
          if (this.#proxy !== st) return;
          if (st.healthy && !ok)
            this.#log.warn(`Proxy ${displayUrl(st.url)} is unhealthy (ping ${st.pingUrl} failed)`);
          else if (!st.healthy && ok) this.#log.info(`Proxy ${displayUrl(st.url)} recovered`);
          st.healthy = ok;
        });
      };
      st.timer = setInterval(tick, st.checkIntervalS * 1000);
      st.timer.unref();
      tick();
    }
  }

  #startMirrorPings(st: MirrorState): void {
    const ms = Math.max(1, st.cfg.health_check_interval) * 1000;
    st.timer = setInterval(() => {
      if (this.#closed || st.enabled) return;
      if (Date.now() - this.#lastActive > st.cfg.health_check_pause_elapsed * 1000) return;
      void this.#ping(st.pingUrl, true).then((ok) => {
        if (!ok || st.enabled) return;
        st.failures = 0;
        st.enabled = true;
        this.#log.info(`Mirror ${st.cfg.host} recovered`);
      });
    }, ms);
    st.timer.unref();
  }

  /** GET `url`: true on 2xx (or any status below 500 with `below500`). */
  async #ping(url: string, below500 = false): Promise<boolean> {
    try {
      const timeoutMs = Math.max(1, this.#cfg.connect_timeout || 5) * 1000;
      const res = await this.#agent.request({
        ...this.#target(new URL(url)),
        method: 'GET',
        headers: { 'user-agent': this.#userAgent },
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.body.dump();
      return below500 ? res.statusCode < 500 : res.statusCode >= 200 && res.statusCode < 300;
    } catch {
      return false;
    }
  }

  #target(u: URL): { origin: string; path: string } {
    return { origin: u.origin, path: u.pathname + u.search };
  }

  async #dispatch(
    agent: Agent,
    origin: string,
    path: string,
    req: SendRequest,
    headers: Record<string, string>,
    shown: URL,
  ): Promise<Response> {
    try {
      return await agent.request({
        origin,
        path,
        method: req.method,
        headers,
        body: req.body ?? null,
        ...(req.signal !== undefined ? { signal: req.signal } : {}),
      });
    } catch (e) {
      throw classifyHttpError(e, req.what, shown, this.#cfg.connect_timeout * 1000, this.#cfg.timeout * 1000);
    }
  }

  #headersFor(req: SendRequest): Record<string, string> {
    const h: Record<string, string> = { 'user-agent': this.#userAgent, ...this.#headers };
    for (const [k, v] of Object.entries(req.headers)) setHeader(h, k, v);
    return h;
  }

  #failed(msg: string): void {
    this.#event?.(msg);
  }

  /**
   * Route: healthy proxy -> enabled mirrors in order -> origin. Returns the response (any
   * status); throws a NydusError (marked transient when retrying may help) when no route answered.
   */
  async send(req: SendRequest): Promise<Response> {
    if (this.#closed) throw new NydusError('ERR_IO', `${req.what}: the backend connection is closed`);
    this.#lastActive = Date.now();
    const webOrigin = this.#sockAgent === undefined;
    const proxy = this.#proxy;
    if (
      proxy !== undefined &&
      req.direct !== true &&
      webOrigin &&
      !(req.noProxy === true && proxy.fallback)
    ) {
      const viaProxy = await this.#sendViaProxy(proxy, req);
      if (viaProxy !== undefined) return viaProxy;
    }
    if (this.#mirrors.length > 0 && req.direct !== true && req.noMirrors !== true && webOrigin) {
      const viaMirror = await this.#sendViaMirrors(req);
      if (viaMirror !== undefined) return viaMirror;
    }
    return this.#sendDirect(req);
  }

  async #sendDirect(req: SendRequest): Promise<Response> {
    const headers = this.#headersFor(req);
    const url = req.url;
    req.sign?.(url, headers);
    if (this.#sockAgent !== undefined) {
      return this.#dispatch(
        this.#sockAgent,
        'http://localhost',
        url.pathname + url.search,
        req,
        headers,
        url,
      );
    }
    return this.#dispatch(this.#agent, url.origin, url.pathname + url.search, req, headers, url);
  }

  /** Through the proxy; undefined means "go on to the origin" (fallback). */
  async #sendViaProxy(proxy: ProxyState, req: SendRequest): Promise<Response | undefined> {
    if (!proxy.healthy) {
      if (!proxy.fallback) {
        const msg = `${req.what}: proxy is not healthy and fallback is disabled`;
        this.#failed(msg);
        throw markTransient(new NydusError('ERR_NETWORK', msg));
      }
      const now = Date.now();
      if (now - this.#lastFallbackLog >= FALLBACK_LOG_GAP_MS) {
        this.#lastFallbackLog = now;
        this.#log.warn(`Proxy ${displayUrl(proxy.url)} is not healthy, fallback to the origin`);
      }
      return undefined;
    }
    let target = req.url;
    if (proxy.useHttp && target.protocol === 'https:')
      target = new URL(`http:${target.href.slice('https:'.length)}`);
    const headers = this.#headersFor(req);
    req.sign?.(target, headers);
    const prefetch = req.prefetch === true;
    setHeader(headers, 'host', target.host);
    setHeader(headers, 'X-Dragonfly-Priority', prefetch ? '3' : '6');
    setHeader(headers, 'X-Dragonfly-Use-P2P', 'true');
    setHeader(headers, 'X-Dragonfly-Prefetch', prefetch ? 'true' : 'false');
    let res: Response;
    try {
      res = await this.#dispatch(this.#agent, proxy.url.origin, target.href, req, headers, target);
    } catch (e) {
      const msg = `${req.what}: proxy ${displayUrl(proxy.url)} failed: ${errorText(e)}`;
      this.#failed(msg);
      if (!proxy.fallback || req.signal?.aborted === true) throw e;
      this.#log.warn(`${msg}; fallback to the origin`);
      return undefined;
    }
    const errType = res.headers['x-dragonfly-error-type'];
    if (errType === 'proxy' || res.statusCode === 403 || res.statusCode === 429) {
      await res.body.dump().catch(() => undefined);
      if (res.statusCode === 429) {
        const msg = `${req.what}: proxy ${displayUrl(proxy.url)} rate-limited the request (HTTP 429)`;
        this.#failed(msg);
        if (prefetch) throw new NydusError('ERR_NETWORK', msg);
        this.#log.warn(`${msg}; going to the origin`);
        await BACKEND_QPS_LIMITER.acquire(req.signal);
        return undefined;
      }
      if (res.statusCode === 403) {
        const msg = `${req.what}: proxy ${displayUrl(proxy.url)} refused the request (HTTP 403)`;
        this.#failed(msg);
        throw new NydusError('ERR_AUTH', msg);
      }
      const msg = `${req.what}: proxy ${displayUrl(proxy.url)} failed (HTTP ${res.statusCode}, X-Dragonfly-Error-Type: proxy)`;
      this.#failed(msg);
      if (!proxy.fallback) throw markTransient(new NydusError('ERR_NETWORK', msg));
      this.#log.warn(`${msg}; fallback to the origin`);
      return undefined;
    }
    if (serverFailed(res.statusCode) && proxy.fallback) {
      await res.body.dump().catch(() => undefined);
      const msg = `${req.what}: proxy ${displayUrl(proxy.url)} answered HTTP ${res.statusCode}`;
      this.#failed(msg);
      this.#log.warn(`${msg}; fallback to the origin`);
      return undefined;
    }
    return res;
  }

  /** Through the first enabled mirror that answers; undefined means "go to the origin". */
  async #sendViaMirrors(req: SendRequest): Promise<Response | undefined> {
    const authed = hasHeader(req.headers, 'authorization');
    for (const m of this.#mirrors) {
      if (!m.enabled) continue;
      // Without auth_through, requests without credentials (the auth dance) go to the origin.
      if (!m.cfg.auth_through && !authed) return undefined;
      const url = rebase(req.url, m.base);
      const headers = this.#headersFor(req);
      for (const [k, v] of Object.entries(m.cfg.headers)) setHeader(headers, k, v);
      req.sign?.(url, headers);
      let failure: string;
      try {
        const res = await this.#dispatch(
          this.#agent,
          url.origin,
          url.pathname + url.search,
          req,
          headers,
          url,
        );
        if (!serverFailed(res.statusCode)) return res;
        await res.body.dump().catch(() => undefined);
        failure = `HTTP ${res.statusCode}`;
      } catch (e) {
        if (req.signal?.aborted === true) throw e;
        failure = errorText(e);
      }
      m.failures++;
      const msg = `${req.what}: mirror ${m.cfg.host} failed (${failure})`;
      this.#failed(msg);
      if (m.enabled && m.failures >= Math.max(1, m.cfg.failure_limit)) {
        m.enabled = false;
        this.#log.warn(`${msg}; failure limit ${m.cfg.failure_limit} reached, mirror disabled`);
      } else {
        this.#log.warn(`${msg}; trying the next route`);
      }
    }
    return undefined;
  }

  /**
   * Run `fn` under upstream's budgets: on-demand reads 3 retries (at least `retry_limit`),
   * prefetch 1 with a random 100 ms - 1 s sleep. Transient errors are retried; the last
   * on-demand retry and a rate-limited one bypass the proxy and take a token from the
   * process-wide QPS limiter. The final error goes to the events ring.
   */
  async withRetries<T>(
    what: string,
    prefetch: boolean,
    fn: (ctx: { attempt: number; noProxy: boolean }) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    let left = prefetch ? 1 : Math.max(3, this.#cfg.retry_limit);
    let noProxy = false;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn({ attempt, noProxy });
      } catch (e) {
        const aborted = signal?.aborted === true;
        if (aborted || !isTransient(e) || left <= 0 || this.#closed) {
          if (!aborted) this.#failed(`${what}: ${errorText(e)}`);
          throw e;
        }
        left--;
        if (!prefetch && left === 0 && this.#proxy !== undefined) {
          noProxy = true;
          this.#log.warn(`${what}: ${errorText(e)}; retrying at the origin (QPS limited), ${left} left`);
          await BACKEND_QPS_LIMITER.acquire(signal);
        } else if (prefetch) {
          const ms = 100 + Math.floor(Math.random() * 900);
          this.#log.warn(`${what}: ${errorText(e)}; retrying prefetch in ${ms} ms, ${left} left`);
          await sleep(ms, undefined, signal !== undefined ? { signal } : undefined);
        } else {
          this.#log.warn(`${what}: ${errorText(e)}; retrying, ${left} left`);
          await sleep(50 * (attempt + 1), undefined, signal !== undefined ? { signal } : undefined);
        }
      }
    }
  }

  /** Note a finished read for the slow-request log (upstream: > 250 ms, > 1 s above 4 MiB). */
  noteDone(what: string, bytes: number, startMs: number): void {
    const ms = Date.now() - startMs;
    if (ms >= (bytes > 4 << 20 ? 1000 : 250))
      this.#log.warn(`${what}: ${bytes} bytes took ${ms} ms: slow request`);
  }

  /** Hot update of the proxy URL (API `proxy_url`); empty turns the proxy off. */
  setProxyUrl(url: string): void {
    if (this.#mirrors.length > 0 && url !== '')
      throw new NydusError('ERR_INVALID_ARG', 'backend "mirrors" and "proxy" cannot be used together');
    this.#setProxy(url);
    this.#log.info(
      url === '' ? 'Backend proxy turned off' : `Backend proxy set to ${displayUrl(new URL(url))}`,
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#proxy?.timer !== undefined) clearInterval(this.#proxy.timer);
    for (const m of this.#mirrors) if (m.timer !== undefined) clearInterval(m.timer);
    await Promise.all([this.#agent.close(), this.#sockAgent?.close()]);
  }
}

/** A short or long body, or a failed read of one: a transient ERR_IO. */
export function bodyError(what: string, msg: string, cause?: unknown): Error {
  return markTransient(new NydusError('ERR_IO', `${what}: ${msg}`, cause !== undefined ? { cause } : {}));
}

export { isTransient, markTransient, isNydusError };
