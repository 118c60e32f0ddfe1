import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ossSchema, s3Schema } from '../../src/daemon/config/schema.js';
import { RegistryClient } from '../../src/registry/client.js';
import { ossObjectStore } from '../../src/storage/remote/oss.js';
import { s3ObjectStore, type ObjectStore } from '../../src/storage/remote/s3.js';
import { startFaultProxy, type Fault, type FaultCounters, type FaultProxy } from '../helpers/fault-proxy.js';
import { NGINX_BIN, startNginx, staticBlobs } from '../helpers/nginx.js';
import { cleanup, createImage, startDaemon, stopDaemon, tmp, type Daemon } from '../helpers/nydusd.js';
import { prng } from '../helpers/prng.js';
import { freePort, haveRegistry, REGISTRY_BIN, startRegistry } from '../helpers/registry.js';
import { ossTable, s3Table, startS3, type TestS3 } from '../helpers/s3.js';

/**
 * The fault suite's harness, shared by test/faults/faults.test.ts and bench/faults.mjs: a small
 * image whose blob lives on a network backend, the fault proxy (test/helpers/fault-proxy.ts) in
 * front of that backend, nydusd mounting the image through the proxy, and 16 concurrent readers
 * hashing every file while a fault is on. The rule checked: every read gives the right bytes or
 * an error, never wrong bytes; no reader hangs past its bound; once the fault is off, every
 * file reads right on the same mount.
 */

/** The daemon's network timeouts (s): short, so that stalls resolve quickly. */
export const NET_TIMEOUT_S = 2;
/** Concurrent readers while a fault is on. */
export const READERS = 16;
/** Bound of one reader's pass over every file; a reader still running then has hung. */
export const READER_BOUND_MS = 120_000;

export interface FaultCase {
  name: string;
  /** What it does, for the report. */
  what: string;
  fault: Fault;
  /** Readers of this case (default `READERS`). */
  readers?: number;
}

/** The faults, each on a part of the data requests (so that retries can win) unless said. */
export const FAULT_CASES: readonly FaultCase[] = [
  {
    name: 'reset',
    what: 'connection reset (RST) half way through the body, 30% of data requests',
    fault: { kind: 'reset', rate: 0.3 },
  },
  {
    name: 'stall',
    what: `no body byte for 3 s (daemon timeout ${NET_TIMEOUT_S} s), 25% of data requests, at most 6`,
    fault: { kind: 'stall', ms: 3000, rate: 0.25, count: 6 },
  },
  {
    name: '5xx burst',
    what: 'the next 12 data requests answered 503',
    fault: { kind: 'status', status: 503, count: 12 },
  },
  {
    name: '429',
    what: 'the next 6 data requests answered 429 (Retry-After: 1)',
    fault: { kind: 'status', status: 429, retryAfter: 1, count: 6 },
  },
  {
    name: 'truncated body',
    what: 'full Content-Length, closed half way, 30% of data requests',
    fault: { kind: 'truncate', rate: 0.3 },
  },
  {
    name: 'slow trickle',
    what: 'every data response at 1 MiB/s',
    fault: { kind: 'trickle', bytesPerSecond: 1 << 20 },
  },
  {
    name: 'flipped byte',
    what: 'one byte flipped in the body, 30% of data requests',
    fault: { kind: 'flip', rate: 0.3 },
  },
  {
    name: 'flipped byte, every response',
    what: 'one byte flipped in every data response: only chunks that shared a response with the spoiled one read right; 4 readers',
    fault: { kind: 'flip' },
    readers: 4,
  },
];

/** The test image: a few hundred files, a few MB, one blob. */
export interface FaultImage {
  dir: string;
  src: string;
  boot: string;
  blobDir: string;
  blobId: string;
  blobPath: string;
  /** md5 (hex) by path relative to the root. */
  md5: Map<string, string>;
  bytes: number;
}

/** Build the image in `dir` (small random and text files in nested dirs, a few bigger ones). */
export async function buildFaultImage(dir: string): Promise<FaultImage> {
  const src = join(dir, 'src');
  const blobDir = join(dir, 'blobs');
  mkdirSync(src, { recursive: true });
  mkdirSync(blobDir, { recursive: true });
  const rnd = prng(2024);
  const md5 = new Map<string, string>();
  let bytes = 0;
  const put = (rel: string, data: Buffer): void => {
    const p = join(src, rel);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, data);
    md5.set(rel, createHash('md5').update(data).digest('hex'));
    bytes += data.length;
  };
  const random = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
    return b;
  };
  const text = (n: number, seed: number): Buffer =>
    Buffer.from(
      Array.from({ length: Math.ceil(n / 16) }, (_, i) => `line ${seed}-${i} ok\n`)
        .join('')
        .slice(0, n),
    );
  for (let i = 0; i < 240; i++) {
    const size = Math.floor(rnd() * 16 * 1024);
    put(`d${i % 12}/s${i}`, i % 3 === 0 ? text(size, i) : random(size));
  }
  for (let i = 0; i < 20; i++) put(`m/m${i}`, random(32 * 1024 + Math.floor(rnd() * 160 * 1024)));
  put('big/b0', random(900 * 1024 + 7));
  put('big/b1', random(600 * 1024 + 3));
  put('empty', Buffer.alloc(0));
  const boot = join(dir, 'image.boot');
  await createImage(src, boot, blobDir, ['--chunk-size', '0x10000']);
  const ids = readdirSync(blobDir);
  if (ids.length !== 1) throw new Error(`expected one blob, got ${ids.join(', ')}`);
  const blobId = ids[0]!;
  return { dir, src, boot, blobDir, blobId, blobPath: join(blobDir, blobId), md5, bytes };
}

/** A backend's servers, holding the image's blob. */
export interface BackendServer {
  /** `http://127.0.0.1:PORT`: what the fault proxy fronts. */
  upstream: string;
  /** The data requests (faults apply to these only). */
  match(method: string, path: string): boolean;
  /** The v2 backend table of nydusd, going to `proxyHost` (`127.0.0.1:PORT`) instead of the upstream. */
  backend(proxyHost: string): { type: string; table: Record<string, unknown> };
  stop(): Promise<void>;
}

export interface FaultBackend {
  name: 'registry' | 's3' | 'oss' | 'http-proxy';
  /** Why it cannot run on this machine (a binary missing), or undefined. */
  unavailable(): string | undefined;
  start(img: FaultImage): Promise<BackendServer>;
}

const net = { timeout: NET_TIMEOUT_S, connect_timeout: NET_TIMEOUT_S };
const isGet = (m: string): boolean => m === 'GET';

async function uploadTo(store: ObjectStore, img: FaultImage): Promise<void> {
  try {
    await store.upload(img.blobId, img.blobPath);
  } finally {
    await store.close();
  }
}

/**
 * An object-store backend (s3, oss) over one s3rver behind the signature-checking front: the
 * blob uploaded with the backend's own signing, nydusd pointed at the fault proxy as endpoint.
 */
function objectStoreBackend(
  name: 's3' | 'oss',
  store: (table: Record<string, unknown>) => ObjectStore,
  table: (s: TestS3, over?: Record<string, unknown>) => Record<string, unknown>,
): FaultBackend {
  return {
    name,
    unavailable: () => undefined,
    async start(img) {
      const s = await startS3();
      try {
        await uploadTo(store(table(s)), img);
      } catch (e) {
        await s.stop();
        throw e;
      }
      return {
        upstream: s.url,
        match: (m, p) => isGet(m) && p.startsWith(`/${s.bucket}/`),
        backend: (host) => ({ type: name, table: table(s, { endpoint: host, ...net }) }),
        stop: () => s.stop(),
      };
    },
  };
}

/** The backends, one table entry each. */
export const FAULT_BACKENDS: readonly FaultBackend[] = [
  {
    name: 'registry',
    unavailable: () => (haveRegistry() ? undefined : `${REGISTRY_BIN} is not installed`),
    async start(img) {
      const reg = await startRegistry({});
      const repo = 'faults/image';
      try {
        const client = new RegistryClient(reg.host, { plainHttp: true });
        try {
          await client
            .repository(repo)
            .pushBlob(`sha256:${img.blobId}`, readFileSync(img.blobPath).length, img.blobPath);
        } finally {
          await client.close();
        }
      } catch (e) {
        await reg.stop();
        throw e;
      }
      return {
        upstream: reg.url,
        match: (m, p) => isGet(m) && p.includes('/blobs/'),
        backend: (host) => ({ type: 'registry', table: { scheme: 'http', host, repo, ...net } }),
        stop: () => reg.stop(),
      };
    },
  },
  objectStoreBackend('s3', (t) => s3ObjectStore(s3Schema.parse(t)), s3Table),
  objectStoreBackend('oss', (t) => ossObjectStore(ossSchema.parse(t)), ossTable),
  {
    name: 'http-proxy',
    unavailable: () => (existsSync(NGINX_BIN) ? undefined : `${NGINX_BIN} is not installed`),
    async start(img) {
      const port = await freePort();
      const nginx = await startNginx({
        servers: staticBlobs(`127.0.0.1:${port}`, '/blobs', img.blobDir),
        ports: [port],
      });
      return {
        upstream: `http://127.0.0.1:${port}`,
        match: (m, p) => isGet(m) && p.startsWith('/blobs/'),
        backend: (host) => ({
          type: 'http-proxy',
          table: { addr: `http://${host}`, path: '/blobs', ...net },
        }),
        stop: () => nginx.dispose(),
      };
    },
  },
];

/** What one pass of readers saw. */
export interface ReadTally {
  /** File reads that gave the right bytes. */
  right: number;
  /** File reads that gave bytes other than the file's: must stay 0. */
  wrong: number;
  /** File reads that failed (EIO), by error text. */
  errors: number;
  errorKinds: Record<string, number>;
  /** Readers killed at the bound (hung). */
  hung: number;
  /** Longest reader, ms. */
  slowestMs: number;
  /** Some wrong reads, for messages. */
  wrongFiles: string[];
}

export interface FaultResult {
  backend: string;
  fault: string;
  what: string;
  files: number;
  readers: number;
  /** The pass of the 16 readers while the fault was on. */
  during: ReadTally;
  /** One pass over every file on the same mount once the fault was off. */
  after: ReadTally;
  /** Every file right after the fault cleared. */
  recovered: boolean;
  proxy: FaultCounters;
  /** Seconds the case took (mount to unmount). */
  seconds: number;
  /** The daemon stopped cleanly (exit 0, mount gone). */
  cleanStop: boolean;
  /** Set when the case could not run (the mount failed...). */
  failed?: string;
}

function emptyTally(): ReadTally {
  return { right: 0, wrong: 0, errors: 0, errorKinds: {}, hung: 0, slowestMs: 0, wrongFiles: [] };
}

/** One reader: md5sum of every file of `list` (NUL-separated, relative to `root`), bounded. */
function reader(
  root: string,
  list: string,
  boundMs: number,
): Promise<{ out: string; err: string; hung: boolean; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const c = spawn('xargs', ['-0', '-a', list, 'md5sum', '--'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let hung = false;
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => {
      hung = true;
      c.kill('SIGKILL');
    }, boundMs);
    c.on('close', () => {
      clearTimeout(timer);
      resolve({ out, err, hung, ms: performance.now() - t0 });
    });
  });
}

/** Run `count` readers over every file of the image under `mnt`, each in its own order. */
export async function readAll(
  mnt: string,
  img: FaultImage,
  count: number,
  workDir: string,
  seed: number,
  boundMs = READER_BOUND_MS,
): Promise<ReadTally> {
  const files = [...img.md5.keys()];
  const lists: string[] = [];
  for (let r = 0; r < count; r++) {
    const rnd = prng(seed * 1000 + r);
    const order = [...files];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const p = join(workDir, `list-${seed}-${r}`);
    writeFileSync(p, order.join('\0'));
    lists.push(p);
  }
  const runs = await Promise.all(lists.map((l) => reader(mnt, l, boundMs)));
  const t = emptyTally();
  for (const run of runs) {
    if (run.hung) t.hung++;
    t.slowestMs = Math.max(t.slowestMs, run.ms);
    const seen = new Set<string>();
    for (const line of run.out.split('\n')) {
      if (line.length < 35) continue;
      const sum = line.slice(0, 32);
      const path = line.slice(34);
      seen.add(path);
      if (img.md5.get(path) === sum) t.right++;
      else {
        t.wrong++;
        if (t.wrongFiles.length < 10) t.wrongFiles.push(path);
      }
    }
    for (const line of run.err.split('\n')) {
      const m = /^md5sum: (.*): ([^:]+)$/.exec(line);
      if (m === null) continue;
      seen.add(m[1]!);
      t.errors++;
      t.errorKinds[m[2]!] = (t.errorKinds[m[2]!] ?? 0) + 1;
    }
    // A hung reader leaves files unread: counted as neither right nor wrong.
    if (!run.hung) {
      for (const f of files) {
        if (!seen.has(f)) {
          t.errors++;
          t.errorKinds['not reported'] = (t.errorKinds['not reported'] ?? 0) + 1;
        }
      }
    }
  }
  return t;
}

/** The v2 daemon config of a backend table: no cache, so every read that misses goes to the network. */
function daemonConfig(dir: string, b: { type: string; table: Record<string, unknown> }): string {
  const p = join(dir, 'nydusd.json');
  writeFileSync(
    p,
    JSON.stringify({
      version: 2,
      backend: { type: b.type, [b.type]: b.table },
      cache: { type: 'dummycache' },
    }),
  );
  return p;
}

/**
 * One fault over one backend: a fresh nydusd mounts the image through `proxy` (fault off), the
 * fault is switched on, `READERS` readers hash every file, the fault is switched off, one more
 * pass must read every file right; then the daemon stops.
 */
export async function runFaultCase(
  img: FaultImage,
  server: BackendServer,
  proxy: FaultProxy,
  backendName: string,
  fc: FaultCase,
  seed: number,
): Promise<FaultResult> {
  const started = performance.now();
  const { dir, mnt } = tmp();
  const result: FaultResult = {
    backend: backendName,
    fault: fc.name,
    what: fc.what,
    files: img.md5.size,
    readers: fc.readers ?? READERS,
    during: emptyTally(),
    after: emptyTally(),
    recovered: false,
    proxy: proxy.counters,
    seconds: 0,
    cleanStop: false,
  };
  let d: Daemon | undefined;
  try {
    proxy.set(undefined);
    const cfg = daemonConfig(dir, server.backend(proxy.host));
    d = await startDaemon(mnt, ['--config', cfg, '--bootstrap', img.boot, '--log-level', 'error']);
    proxy.resetCounters();
    proxy.set(fc.fault);
    result.during = await readAll(mnt, img, result.readers, dir, seed);
    proxy.set(undefined);
    result.proxy = { ...proxy.counters, byKind: { ...proxy.counters.byKind } };
    result.after = await readAll(mnt, img, 1, dir, seed + 1);
    result.recovered = result.after.right === img.md5.size && result.after.hung === 0;
    try {
      await stopDaemon(d);
      result.cleanStop = true;
    } catch (e) {
      result.failed = `daemon stop: ${e instanceof Error ? e.message : String(e)}`;
    }
    d = undefined;
  } catch (e) {
    result.failed = e instanceof Error ? e.message : String(e);
  } finally {
    proxy.set(undefined);
    cleanup(d, mnt);
    rmSync(dir, { recursive: true, force: true });
    result.seconds = (performance.now() - started) / 1000;
  }
  return result;
}

/**
 * Every fault of `faults` over one backend: its servers and one fault proxy started once,
 * torn down after. `onResult` sees each result as it comes.
 */
export async function runBackendFaults(
  backend: FaultBackend,
  img: FaultImage,
  faults: readonly FaultCase[] = FAULT_CASES,
  onResult: (r: FaultResult) => void = () => undefined,
): Promise<FaultResult[]> {
  const server = await backend.start(img);
  let proxy: FaultProxy | undefined;
  const out: FaultResult[] = [];
  try {
    proxy = await startFaultProxy({
      upstream: server.upstream,
      match: (m, p) => server.match(m, p),
      seed: 7,
    });
    let seed = 1;
    for (const fc of faults) {
      const r = await runFaultCase(img, server, proxy, backend.name, fc, seed++);
      out.push(r);
      onResult(r);
    }
  } finally {
    await proxy?.close();
    await server.stop();
  }
  return out;
}

/** One line of a result, for test diagnostics and logs. */
export function resultLine(r: FaultResult): string {
  const d = r.during;
  const errs = Object.entries(d.errorKinds)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  return (
    `${r.backend} x ${r.fault}: ${d.right} right, ${d.wrong} wrong, ${d.errors} errors${errs !== '' ? ` (${errs})` : ''}, ` +
    `${d.hung} hung, slowest reader ${(d.slowestMs / 1000).toFixed(1)} s; ${r.proxy.injected} of ${r.proxy.matched} ` +
    `data requests hit; after: ${r.recovered ? 'recovered' : `NOT recovered (${r.after.right}/${r.files} right, ${r.after.errors} errors, ${r.after.wrong} wrong)`}` +
    `${r.failed !== undefined ? `; FAILED: ${r.failed}` : ''} [${r.seconds.toFixed(1)} s]`
  );
}
