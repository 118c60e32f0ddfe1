import { NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import type { Credentials } from './docker-config.js';

/** One challenge of a WWW-Authenticate header; `scheme` is lowercase. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse a WWW-Authenticate header (RFC 7235): one or more challenges, each a scheme followed by
 * comma-separated `key=value` pairs whose values are tokens or quoted strings (which may contain
 * commas, as scopes like "repository:a:pull,push" do).
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = (): void => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const start = i;
    const word = token();
    if (word === '') {
      i++; // not a token character: skip it
      continue;
    }
    skipWs();
    if (header[i] === '=' && current !== undefined) {
      i++;
      skipWs();
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const vs = i;
        while (i < n && header[i] !== ',' && header[i] !== ' ') i++;
        value = header.slice(vs, i);
      }
      current.params[word.toLowerCase()] = value;
    } else if (header[i] === '=' && current === undefined) {
      // token68 or garbage before any scheme: ignore the rest
      i = n;
    } else {
      current = { scheme: header.slice(start, start + word.length).toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** The access scope for a repository: "repository:<name>:pull" or ":pull,push". */
export function repositoryScope(name: string, actions: 'pull' | 'push'): string {
  return `repository:${name}:${actions === 'push' ? 'pull,push' : 'pull'}`;
}

/** An HTTP exchange the authenticator needs (token requests), done by the transport. */
export type SendFn = (
  method: 'GET' | 'POST',
  url: URL,
  headers: Record<string, string>,
  body: Buffer | undefined,
) => Promise<{ status: number; text: string }>;

interface CachedToken {
  token: string;
  expiresAt: number;
}

type Known =
  { kind: 'none' } | { kind: 'basic' } | { kind: 'bearer'; realm: string; service: string | undefined };

/** Seconds a token lives when the token server does not say (as the distribution spec says). */
export const DEFAULT_TOKEN_LIFETIME_S = 60;
const CLIENT_ID = 'nydus-registry-client';

export interface AuthOptions {
  host: string;
  send: SendFn;
  log: Logger;
  registryToken?: string | undefined;
  loadCredentials: () => Promise<Credentials | undefined>;
  now?: () => number;
}

/**
 * What a registry wants from us: remembers the registry's challenge (Basic or Bearer), fetches
 * bearer tokens from its token server (POST form first, GET with Basic as the fallback), and
 * caches them per scope set until they expire.
 */
export class RegistryAuth {
  private known: Known = { kind: 'none' };
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<string>>();
  private registryToken: string | undefined;
  private credentials: Credentials | undefined;
  private credentialsLoaded = false;
  private generation = 0;
  /** Tokens fetched so far (for tests and metrics). */
  tokensFetched = 0;

  constructor(private readonly opts: AuthOptions) {
    const t = opts.registryToken?.trim();
    this.registryToken = t === undefined || t === '' ? undefined : t;
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** Replace the credentials; cached tokens are dropped. */
  setCredentials(c: Credentials | undefined): void {
    this.credentials = c;
    this.credentialsLoaded = true;
    this.generation++;
    this.tokens.clear();
    this.inflight.clear();
  }

  /** Replace (or drop) the ready-made bearer token. */
  setRegistryToken(t: string | undefined): void {
    this.registryToken = t === undefined || t.trim() === '' ? undefined : t.trim();
  }

  async getCredentials(): Promise<Credentials | undefined> {
    if (!this.credentialsLoaded) {
      const c = await this.opts.loadCredentials();
      if (!this.credentialsLoaded) {
        this.credentials = c;
        this.credentialsLoaded = true;
      }
    }
    return this.credentials;
  }

  /** The user name of the credentials, for messages (never the secret). */
  describeCredentials(): string {
    const c = this.credentials;
    if (c === undefined) return 'no credentials';
    return 'username' in c ? `the credentials of user "${c.username}"` : 'the identity token';
  }

  /** The Authorization header to send for these scopes, or undefined (anonymous). */
  async authorization(scopes: readonly string[]): Promise<string | undefined> {
    if (this.registryToken !== undefined) return `Bearer ${this.registryToken}`;
    const known = this.known;
    if (known.kind === 'basic') {
      const c = await this.getCredentials();
      if (c === undefined || !('username' in c)) return undefined;
      return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
    }
    if (known.kind === 'bearer') return `Bearer ${await this.token(known, scopes)}`;
    return undefined;
  }

  /**
   * A 401 came back. `sent` is the Authorization we sent (dropped from the caches); the header
   * is the registry's WWW-Authenticate. Returns true when another attempt can succeed.
   */
  async unauthorized(sent: string | undefined, wwwAuthenticate: string | undefined): Promise<boolean> {
    if (sent !== undefined) {
      if (this.registryToken !== undefined && sent === `Bearer ${this.registryToken}`) {
        this.opts.log.warn(
          `Registry ${this.opts.host} refused the configured registry token; authenticating anew`,
        );
        this.registryToken = undefined;
      }
      for (const [k, v] of this.tokens) if (sent === `Bearer ${v.token}`) this.tokens.delete(k);
    }
    const challenges = parseWwwAuthenticate(wwwAuthenticate ?? '');
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params['realm'] !== undefined);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer !== undefined) {
      const realm = bearer.params['realm']!;
      this.known = { kind: 'bearer', realm, service: bearer.params['service'] };
      return true;
    }
    if (basic !== undefined) {
      this.known = { kind: 'basic' };
      // Basic credentials that were sent and refused will be refused again.
      const next = await this.authorization([]);
      return next !== undefined && next !== sent;
    }
    return false;
  }

  private async token(known: Extract<Known, { kind: 'bearer' }>, scopes: readonly string[]): Promise<string> {
    const key = [...new Set(scopes)].sort().join(' ');
    const cached = this.tokens.get(key);
    if (cached !== undefined && cached.expiresAt > this.now()) return cached.token;
    if (cached !== undefined) this.tokens.delete(key);
    let p = this.inflight.get(key);
    if (p === undefined) {
      const gen = this.generation;
      p = this.fetchToken(known, [...new Set(scopes)].sort()).then(
        (t) => {
          if (this.inflight.get(key) === p) this.inflight.delete(key);
          if (gen === this.generation) this.tokens.set(key, t);
          return t.token;
        },
        (e: unknown) => {
          if (this.inflight.get(key) === p) this.inflight.delete(key);
          throw e;
        },
      );
      this.inflight.set(key, p);
    }
    return p;
  }

  private async fetchToken(
    known: Extract<Known, { kind: 'bearer' }>,
    scopes: readonly string[],
  ): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(known.realm);
    } catch {
      throw new NydusError(
        'ERR_REGISTRY',
        `Registry ${this.opts.host} named an invalid token realm "${known.realm}"`,
      );
    }
    const where = `token server ${realm.origin}${realm.pathname} of registry ${this.opts.host}`;
    const creds = await this.getCredentials();
    const started = this.now();
    let answer: { status: number; text: string } | undefined;
    let method: 'POST' | 'GET' = 'POST';

    if (creds !== undefined) {
      const form = new URLSearchParams();
      if ('identityToken' in creds) {
        form.set('grant_type', 'refresh_token');
        form.set('refresh_token', creds.identityToken);
      } else {
        form.set('grant_type', 'password');
        form.set('username', creds.username);
        form.set('password', creds.password);
      }
      form.set('client_id', CLIENT_ID);
      if (known.service !== undefined) form.set('service', known.service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      answer = await this.opts.send(
        'POST',
        realm,
        { 'content-type': 'application/x-www-form-urlencoded' },
        Buffer.from(form.toString()),
      );
      if (answer.status !== 200 && 'username' in creds) {
        this.opts.log.debug(`${where} answered the token POST with HTTP ${answer.status}; trying GET`);
        answer = undefined;
      }
    }
    if (answer === undefined) {
      method = 'GET';
      const url = new URL(realm);
      if (known.service !== undefined) url.searchParams.set('service', known.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (creds !== undefined && 'username' in creds) {
        headers['authorization'] =
          `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
      answer = await this.opts.send('GET', url, headers, undefined);
    }
    if (answer.status === 401 || answer.status === 403) {
      throw new NydusError(
        'ERR_AUTH',
        `The ${where} refused ${this.describeCredentials()} (HTTP ${answer.status}${errorDetail(answer.text)})`,
      );
    }
    if (answer.status !== 200) {
      throw new NydusError(
        'ERR_REGISTRY',
        `The ${where} answered the token ${method} with HTTP ${answer.status}${errorDetail(answer.text)}`,
      );
    }
    let body: unknown;
    try {
      body = JSON.parse(answer.text);
    } catch {
      throw new NydusError('ERR_REGISTRY', `The ${where} answered with a body that is not JSON`);
    }
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const token = typeof b['token'] === 'string' && b['token'] !== '' ? b['token'] : b['access_token'];
    if (typeof token !== 'string' || token === '') {
      throw new NydusError('ERR_REGISTRY', `The ${where} answered without a token`);
    }
    const ei = b['expires_in'];
    const lifetime = typeof ei === 'number' && ei > 0 ? ei : DEFAULT_TOKEN_LIFETIME_S;
    // Renew a little early (a tenth of the lifetime, at most 10 s) so a token does not expire in flight.
    const margin = Math.min(10_000, lifetime * 100);
    this.tokensFetched++;
    this.opts.log.debug(`Got a token for ${scopes.join(' ')} from the ${where} (expires in ${lifetime} s)`);
    return { token, expiresAt: started + lifetime * 1000 - margin };
  }
}

/** ": CODE: message" from a registry's error JSON ({"errors":[{code,message,detail}]}), or "". */
export function errorDetail(text: string): string {
  if (text === '') return '';
  try {
    const doc = JSON.parse(text) as unknown;
    if (typeof doc === 'object' && doc !== null) {
      const errors = (doc as { errors?: unknown }).errors;
      if (Array.isArray(errors) && errors.length > 0) {
        const parts = errors.map((e: unknown) => {
          const o = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
          const code = typeof o['code'] === 'string' ? o['code'] : '';
          const msg = typeof o['message'] === 'string' ? o['message'] : '';
          return [code, msg].filter((x) => x !== '').join(': ');
        });
        return `: ${parts.join('; ')}`;
      }
      const o = doc as Record<string, unknown>;
      for (const k of ['error_description', 'error', 'message', 'details']) {
        if (typeof o[k] === 'string') return `: ${o[k]}`;
      }
    }
  } catch {
    // not JSON
  }
  const line = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  return line === '' ? '' : `: ${line}`;
}

/** The registry error codes in an error body (MANIFEST_UNKNOWN, BLOB_UNKNOWN, ...). */
export function errorCodes(text: string): string[] {
  try {
    const doc = JSON.parse(text) as { errors?: unknown };
    if (Array.isArray(doc.errors)) {
      return doc.errors
        .map((e: unknown) =>
          typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined,
        )
        .filter((c): c is string => typeof c === 'string');
    }
  } catch {
    // not JSON
  }
  return [];
}
