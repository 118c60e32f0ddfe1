import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IN_CI } from './fixtures.js';

/**
 * Real nginx for tests (Debian's /usr/sbin/nginx): a config written into a temp dir, nginx run
 * in the foreground as our child (`-p DIR -c nginx.conf -g 'daemon off;'`), ready once every
 * listener answers. The server blocks are the test's: a forward proxy (`forwardProxy`), a
 * mirror of another server (`reverseProxy`), a static blob directory (`staticBlobs`), a unix
 * socket listener, or fixed answers. Access lines use the `nydus` format, which records the
 * X-Dragonfly headers a backend sent.
 */

export const NGINX_BIN = '/usr/sbin/nginx';

export interface Nginx {
  /** The temp dir with nginx.conf, logs and temp paths. */
  dir: string;
  /** Lines of the access log so far (format: see ACCESS_FORMAT). */
  access(): string[];
  errors(): string;
  /** Stop (SIGTERM, then SIGKILL); the temp dir stays until `dispose`. */
  stop(): Promise<void>;
  /** Start again, with new server blocks if given (same listeners expected). */
  start(servers?: string): Promise<void>;
  /** Stop and remove the temp dir. */
  dispose(): Promise<void>;
}

export interface NginxOptions {
  /** Server blocks (nginx syntax) placed in the `http` block; `{DIR}` is replaced by the temp dir. */
  servers: string;
  /** TCP ports to wait for (127.0.0.1). */
  ports?: number[];
  /** Unix sockets to wait for. */
  sockets?: string[];
}

/**
 * One access line: `METHOD URI STATUS host=H range=R prio=P p2p=U prefetch=F mirror=M cache=C`
 * (C: the proxy cache's HIT, MISS, ... for a caching proxy). Absent values show as `-`.
 */
const ACCESS_FORMAT =
  "'$request_method $request_uri $status host=$http_host range=$http_range prio=$http_x_dragonfly_priority p2p=$http_x_dragonfly_use_p2p prefetch=$http_x_dragonfly_prefetch mirror=$http_x_test_mirror cache=$upstream_cache_status'";

/** Whether nginx is installed; skips (or fails under CI) when not. */
export function needNginx(t: TestContext): boolean {
  if (existsSync(NGINX_BIN)) return true;
  const why = `${NGINX_BIN} is not installed (apt-get install nginx)`;
  if (IN_CI) throw new Error(`${why}; required in CI`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

function conf(dir: string, servers: string): string {
  const root = process.getuid?.() === 0 ? 'user root root;\n' : '';
  return `${root}worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  log_format nydus ${ACCESS_FORMAT};
  access_log ${dir}/access.log nydus;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  default_type application/octet-stream;
  keepalive_timeout 30s;
${servers.replaceAll('{DIR}', dir)}
}
`;
}

function canConnect(opts: { port: number; host: string } | { path: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(opts);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

export async function startNginx(opts: NginxOptions): Promise<Nginx> {
  if (!existsSync(NGINX_BIN)) throw new Error(`${NGINX_BIN} is not installed`);
  const dir = mkdtempSync(join(tmpdir(), 'nydus-nginx-'));
  mkdirSync(join(dir, 'tmp'));
  let child: ChildProcess | undefined;
  let stderr = '';
  let servers = opts.servers;

  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) {
      if (c !== undefined) running.delete(c);
      return;
    }
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
    if (!done) {
      c.kill('SIGKILL');
      await Promise.race([exited, sleep(5000)]);
    }
    running.delete(c);
    // Workers follow the master; wait until the listeners are gone.
    for (let i = 0; i < 100; i++) {
      const up = await Promise.all((opts.ports ?? []).map((port) => canConnect({ port, host: '127.0.0.1' })));
      if (!up.some(Boolean)) break;
      await sleep(50);
    }
  };

  const start = async (next?: string): Promise<void> => {
    if (child !== undefined) throw new Error('nginx is already running');
    if (next !== undefined) servers = next;
    for (const s of opts.sockets ?? []) rmSync(s, { force: true });
    writeFileSync(join(dir, 'nginx.conf'), conf(dir, servers));
    stderr = '';
    const c = spawn(
      NGINX_BIN,
      ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    child = c;
    running.add(c);
    c.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (c.exitCode !== null) {
        running.delete(c);
        child = undefined;
        throw new Error(`nginx exited with ${c.exitCode}: ${stderr}${readLog(join(dir, 'error.log'))}`);
      }
      const checks = [
        ...(opts.ports ?? []).map((port) => canConnect({ port, host: '127.0.0.1' })),
        ...(opts.sockets ?? []).map((path) => canConnect({ path })),
      ];
      if ((await Promise.all(checks)).every(Boolean)) return;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`nginx did not listen within 10 s: ${stderr}${readLog(join(dir, 'error.log'))}`);
      }
      await sleep(50);
    }
  };

  await start();
  return {
    dir,
    access: () =>
      readLog(join(dir, 'access.log'))
        .split('\n')
        .filter((l) => l !== ''),
    errors: () => readLog(join(dir, 'error.log')),
    stop,
    start,
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readLog(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

/** A forward HTTP proxy on `port` (absolute-form requests), with `GET /ping` answering 200. */
export function forwardProxy(port: number): string {
  return `server {
  listen 127.0.0.1:${port};
  location = /ping { access_log off; return 200 "pong\\n"; }
  location / {
    proxy_pass http://$http_host;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
  }
}`;
}

/**
 * A caching forward proxy on `port`, what a P2P proxy is to nydusd: the first request for a blob
 * fetches the whole blob from its origin (nginx drops the Range upstream when caching) and every
 * range is then served from the cache under the temp dir. `GET /ping` answers 200.
 */
export function cachingForwardProxy(port: number): string {
  return `proxy_cache_path {DIR}/cache levels=1:2 keys_zone=blobs_${port}:4m inactive=1h use_temp_path=off;
server {
  listen 127.0.0.1:${port};
  location = /ping { access_log off; return 200 "pong\\n"; }
  location / {
    proxy_pass http://$http_host;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache blobs_${port};
    proxy_cache_key $http_host$uri;
    proxy_cache_valid 200 206 1h;
    proxy_cache_lock on;
  }
}`;
}

/** A mirror on `port` relaying everything to `upstream` (`127.0.0.1:PORT`). */
export function reverseProxy(port: number, upstream: string): string {
  return `server {
  listen 127.0.0.1:${port};
  location / {
    proxy_pass http://${upstream};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
  }
}`;
}

/** A server on `port` answering `status` to everything. */
export function fixedStatus(port: number, status: number): string {
  return `server {
  listen 127.0.0.1:${port};
  location / { return ${status}; }
}`;
}

/**
 * Static files of `root` under URL prefix `prefix` (`/ns/repo/blobs`), with Range and HEAD, on
 * `listen` (`127.0.0.1:PORT` or `unix:/path`).
 */
export function staticBlobs(listen: string, prefix: string, root: string): string {
  return `server {
  listen ${listen};
  location ${prefix.replace(/\/+$/, '')}/ { alias ${root.replace(/\/+$/, '')}/; }
}`;
}
