import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, createHash, randomBytes, sign } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { RegistryClient, type RegistryOptions } from '../../src/registry/client.js';
import { IN_CI } from './fixtures.js';

/**
 * A real registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with a
 * free port and its own temp dir, optionally with TLS (a CA and server certificate made with
 * openssl), htpasswd Basic auth, or token auth whose tokens come from a small issuer of ours
 * (node:http on 127.0.0.1) signing RS256 JWTs; the registry verifies them through the `x5c`
 * certificate in the JWT header against its `rootcertbundle`.
 */

export const REGISTRY_BIN = '/usr/bin/docker-registry';

export interface TokenIssuer {
  /** Tokens issued so far. */
  issued: number;
  /** Token lifetime in seconds, as put into `exp` and `expires_in` (settable). */
  expiresIn: number;
  /** Sign this many of the next tokens already expired (the registry then refuses them) while claiming a normal lifetime. */
  expiredNext: number;
  /** Answer POST with 405, so clients have to use GET (settable). */
  refusePost: boolean;
  /** Requests seen by method, and refusals. */
  posts: number;
  gets: number;
  refused: number;
  /** Credentials accepted (settable, for hot-update tests). */
  user: string;
  pass: string;
  readonly url: string;
  readonly service: string;
}

export interface TestRegistry {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" or https */
  url: string;
  caFile?: string;
  dataDir: string;
  /** The temp dir holding config, certificates, data. */
  dir: string;
  user?: string;
  pass?: string;
  tokenIssuer?: TokenIssuer;
  /** What the registry wrote to stderr lately. */
  logs(): string;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export interface StartRegistryOptions {
  tls?: boolean;
  htpasswd?: { user: string; pass: string };
  token?: boolean | { user?: string; pass?: string; expiresIn?: number };
}

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const cleanUp = (): void => {
    for (const c of children) c.kill('SIGKILL');
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  };
  process.on('exit', cleanUp);
  // A test run cancelled by a signal still takes its registries down, then dies of the signal.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      cleanUp();
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** Is Debian's docker-registry installed? */
export function haveRegistry(): boolean {
  return existsSync(REGISTRY_BIN);
}

/**
 * For tests that need the real registry: without it they skip loudly, and under CI=true its
 * absence is a failure.
 */
export function needRegistry(t: TestContext): boolean {
  if (haveRegistry()) return true;
  const why = `${REGISTRY_BIN} is not installed (apt-get install docker-registry)`;
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

export async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA and a server certificate for 127.0.0.1 and localhost, signed by it. */
export function makeTlsFiles(dir: string): { caFile: string; certFile: string; keyFile: string } {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=nydus-ts test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  openssl(dir, ['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  writeFileSync(
    join(dir, 'server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n',
  );
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '2',
    '-extfile',
    'server.ext',
  ]);
  return { caFile: join(dir, 'ca.crt'), certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') };
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

interface IssuerHandle {
  issuer: TokenIssuer;
  certFile: string;
  listen(): Promise<void>;
  close(): Promise<void>;
}

const TOKEN_SERVICE = 'nydus-test-registry';
const TOKEN_ISSUER = 'nydus-test-issuer';

async function startTokenIssuer(
  dir: string,
  opts: { user: string; pass: string; expiresIn: number },
): Promise<IssuerHandle> {
  openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'token.key',
    '-out',
    'token.crt',
    '-days',
    '2',
    '-subj',
    '/CN=nydus-ts test token issuer',
  ]);
  const keyPem = readFileSync(join(dir, 'token.key'), 'utf8');
  const certDer = new X509Certificate(readFileSync(join(dir, 'token.crt'))).raw.toString('base64');
  const refreshTokens = new Set<string>();
  let port = await freePort();
  const state: TokenIssuer = {
    issued: 0,
    expiresIn: opts.expiresIn,
    expiredNext: 0,
    refusePost: false,
    posts: 0,
    gets: 0,
    refused: 0,
    user: opts.user,
    pass: opts.pass,
    get url() {
      return `http://127.0.0.1:${port}/token`;
    },
    service: TOKEN_SERVICE,
  };

  const makeToken = (subject: string, scopes: string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    let exp = now + state.expiresIn;
    if (state.expiredNext > 0) {
      state.expiredNext--;
      exp = now - 3600; // far beyond the registry's leeway
    }
    const access = scopes.flatMap((s) => {
      const first = s.indexOf(':');
      const last = s.lastIndexOf(':');
      if (first < 0 || last <= first) return [];
      return [
        { type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',') },
      ];
    });
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer] };
    const claims = {
      iss: TOKEN_ISSUER,
      sub: subject,
      aud: TOKEN_SERVICE,
      exp,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('RSA-SHA256', Buffer.from(signingInput), keyPem);
    state.issued++;
    return `${signingInput}.${b64url(sig)}`;
  };

  const refuse = (res: ServerResponse, status: number, message: string): void => {
    state.refused++;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message }] }));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (u.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let subject: string;
    let scopes: string[];
    let refreshToken: string | undefined;
    if (req.method === 'POST') {
      state.posts++;
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (state.refusePost) {
        res.writeHead(405).end();
        return;
      }
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      if (form.get('service') !== TOKEN_SERVICE) return refuse(res, 400, 'unknown service');
      scopes = (form.get('scope') ?? '').split(' ').filter((s) => s !== '');
      const grant = form.get('grant_type');
      if (grant === 'password') {
        if (form.get('username') !== state.user || form.get('password') !== state.pass) {
          return refuse(res, 401, 'invalid username or password');
        }
        subject = state.user;
        refreshToken = `rt-${randomBytes(16).toString('hex')}`;
        refreshTokens.add(refreshToken);
      } else if (grant === 'refresh_token') {
        if (!refreshTokens.has(form.get('refresh_token') ?? ''))
          return refuse(res, 401, 'invalid refresh token');
        subject = state.user;
      } else {
        return refuse(res, 400, `unsupported grant_type ${grant}`);
      }
    } else if (req.method === 'GET') {
      state.gets++;
      if (u.searchParams.get('service') !== TOKEN_SERVICE) return refuse(res, 400, 'unknown service');
      scopes = u.searchParams
        .getAll('scope')
        .flatMap((s) => s.split(' '))
        .filter((s) => s !== '');
      const authz = req.headers.authorization ?? '';
      const m = /^Basic (.+)$/i.exec(authz);
      const pair = m !== null ? Buffer.from(m[1]!, 'base64').toString('utf8') : undefined;
      if (pair !== `${state.user}:${state.pass}`) return refuse(res, 401, 'invalid username or password');
      subject = state.user;
    } else {
      res.writeHead(405).end();
      return;
    }
    const token = makeToken(subject, scopes);
    const body: Record<string, unknown> = {
      token,
      access_token: token,
      expires_in: state.expiresIn,
      issued_at: new Date().toISOString(),
    };
    if (refreshToken !== undefined) body['refresh_token'] = refreshToken;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  let server: Server | undefined;
  const listen = async (): Promise<void> => {
    const s = createHttpServer((req, res) => {
      handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', resolve);
    });
    s.unref();
    port = (s.address() as AddressInfo).port;
    server = s;
  };
  await listen();
  return {
    issuer: state,
    certFile: join(dir, 'token.crt'),
    listen,
    close: async () => {
      const s = server;
      server = undefined;
      if (s === undefined) return;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}

/** Start a registry; see StartRegistryOptions. Stop it with `stop()` (also done at exit). */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'nydus-registry-'));
  tempDirs.add(dir);
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  const port = await freePort();
  const host = `127.0.0.1:${port}`;

  const http: Record<string, unknown> = { addr: host, secret: 'nydus-ts-test-secret' };
  let caFile: string | undefined;
  if (opts.tls === true) {
    const tls = makeTlsFiles(dir);
    caFile = tls.caFile;
    http['tls'] = { certificate: tls.certFile, key: tls.keyFile };
  }
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: dataDir }, delete: { enabled: true } },
    http,
  };
  let user: string | undefined;
  let pass: string | undefined;
  let issuer: IssuerHandle | undefined;
  if (opts.htpasswd !== undefined) {
    user = opts.htpasswd.user;
    pass = opts.htpasswd.pass;
    const line = execFileSync('htpasswd', ['-Bbn', user, pass], { encoding: 'utf8' });
    writeFileSync(join(dir, 'htpasswd'), line.trim() + '\n');
    config['auth'] = { htpasswd: { realm: 'nydus-test', path: join(dir, 'htpasswd') } };
  } else if (opts.token !== undefined && opts.token !== false) {
    const o = opts.token === true ? {} : opts.token;
    user = o.user ?? 'tokenuser';
    pass = o.pass ?? 'tokenpass';
    issuer = await startTokenIssuer(dir, { user, pass, expiresIn: o.expiresIn ?? 300 });
    config['auth'] = {
      token: {
        realm: issuer.issuer.url,
        service: TOKEN_SERVICE,
        issuer: TOKEN_ISSUER,
        rootcertbundle: issuer.certFile,
      },
    };
  }
  // YAML is a superset of JSON.
  const configFile = join(dir, 'config.yml');
  writeFileSync(configFile, JSON.stringify(config, null, 2));

  const url = `${opts.tls === true ? 'https' : 'http'}://${host}`;
  let child: ChildProcess | undefined;
  let log = '';

  const spawnRegistry = async (): Promise<void> => {
    const c = spawn(REGISTRY_BIN, ['serve', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(c);
    child = c;
    c.stderr.setEncoding('utf8').on('data', (d: string) => {
      log = (log + d).slice(-16384);
    });
    let exited = false;
    c.once('exit', () => {
      exited = true;
      children.delete(c);
    });
    const probe = new Agent({ connect: { rejectUnauthorized: false, timeout: 1000 } });
    try {
      const deadline = Date.now() + 15_000;
      for (;;) {
        if (exited) throw new Error(`docker-registry exited at start: ${log}`);
        try {
          const res = await request(`${url}/v2/`, {
            dispatcher: probe,
            headersTimeout: 2000,
            bodyTimeout: 2000,
          });
          await res.body.dump();
          return;
        } catch (e) {
          if (Date.now() > deadline)
            throw new Error(`docker-registry did not answer on ${url}: ${String(e)}; ${log}`);
          await sleep(50);
        }
      }
    } finally {
      await probe.close();
    }
  };

  const stopRegistry = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const killer = setTimeout(() => c.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(killer);
  };

  await spawnRegistry();
  const reg: TestRegistry = {
    host,
    url,
    dataDir,
    dir,
    logs: () => log,
    stop: async () => {
      await stopRegistry();
      await issuer?.close();
    },
    restart: async () => {
      await stopRegistry();
      if (issuer !== undefined) {
        await issuer.close();
        await issuer.listen();
      }
      await spawnRegistry();
    },
  };
  if (caFile !== undefined) reg.caFile = caFile;
  if (user !== undefined) reg.user = user;
  if (pass !== undefined) reg.pass = pass;
  if (issuer !== undefined) reg.tokenIssuer = issuer.issuer;
  return reg;
}

export function sha256Digest(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Where the registry keeps a blob's bytes (for corruption tests). */
export function blobDataPath(reg: TestRegistry, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(reg.dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

/**
 * Run `fn` with a client of `reg` (plain HTTP unless the registry speaks TLS, no retries, the
 * Docker config looked up in the registry's temp dir only), closed afterwards.
 */
export async function withClient<T>(
  reg: TestRegistry,
  opts: RegistryOptions,
  fn: (c: RegistryClient) => Promise<T>,
): Promise<T> {
  const c = new RegistryClient(reg.host, {
    plainHttp: !reg.url.startsWith('https'),
    retries: 0,
    env: { DOCKER_CONFIG: reg.dir },
    ...opts,
  });
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}
