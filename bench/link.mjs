// A throttled network link for benchmarks B4/B5/B8: a TCP proxy in front of a server (the
// registry) whose bandwidth is one token bucket per direction shared by ALL connections, like one
// real full-duplex link (nginx's limit_rate is per connection: a client opening more connections
// would look faster than it would be on a real link).
//
//   node bench/link.mjs --listen 127.0.0.1:PORT --target 127.0.0.1:5000 --rate 100mbit [--burst 64KiB]
//   node bench/link.mjs --selftest
//
// Prints "link 127.0.0.1:PORT -> HOST:PORT at RATE" once it accepts connections; on SIGINT or
// SIGTERM it closes and prints the bytes carried. Rates: `100mbit`, `1gbit`, `12.5MB` (bytes,
// decimal), `10MiB`, or a plain number of bytes per second.
//
// As a module: startLink({ listenPort, targetHost, targetPort, bytesPerSecond }) resolves to
// { port, close(), stats() }.
//
// Fairness and memory: bytes leave in quanta of at most 16 KiB, round robin over the connections
// that have data and whose receiver is not backed up; a sender is paused (TCP backpressure) while
// more than 64 KiB of its data waits, and a receiver that does not drain holds its sender, so
// nothing is buffered without bound.
import console from 'node:console';
import { connect, createServer } from 'node:net';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const QUANTUM = 16 * 1024;
const HIGH_WATER = 64 * 1024;
const DEFAULT_BURST = 64 * 1024;

/**
 * Parse a rate: `100mbit` (bits, decimal prefixes), `12.5MB` (bytes, decimal), `10MiB` (bytes,
 * binary), or a number of bytes per second.
 * @param {string} s
 * @returns {number} bytes per second
 */
export function parseRate(s) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(i?)(bit|b|bps)?(?:\/s)?$/i.exec(s.trim());
  if (m === null) throw new Error(`bad rate "${s}" (e.g. 100mbit, 12.5MB, 10MiB)`);
  const [, num, prefix, bin, unit] = m;
  const base = bin === '' ? 1000 : 1024;
  const mult = { '': 1, k: base, m: base ** 2, g: base ** 3 }[prefix.toLowerCase()];
  const bits = unit !== undefined && (unit.toLowerCase() === 'bit' || unit.toLowerCase() === 'bps');
  const v = Number(num) * mult;
  if (!(v > 0)) throw new Error(`rate must be positive: "${s}"`);
  return bits ? v / 8 : v;
}

/**
 * One direction of the link: a token bucket and the flows (one per connection) that share it.
 */
class Bucket {
  /**
   * @param {number} rate bytes per second
   * @param {number} burst bytes
   */
  constructor(rate, burst) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.last = process.hrtime.bigint();
    /** @type {Flow[]} flows with data to send and a receiver that takes it, round robin */
    this.ready = [];
    /** @type {NodeJS.Timeout | undefined} */
    this.timer = undefined;
    this.bytes = 0;
    this.closed = false;
  }

  refill() {
    const now = process.hrtime.bigint();
    const dt = Number(now - this.last) / 1e9;
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + dt * this.rate);
  }

  /** @param {Flow} flow */
  enqueue(flow) {
    if (flow.queued || flow.pending === 0 || flow.waitingDrain || flow.dead) return;
    flow.queued = true;
    this.ready.push(flow);
    this.pump();
  }

  pump() {
    if (this.timer !== undefined || this.closed) return;
    this.refill();
    while (this.ready.length > 0) {
      const flow = /** @type {Flow} */ (this.ready[0]);
      if (flow.dead || flow.pending === 0 || flow.waitingDrain) {
        this.ready.shift();
        flow.queued = false;
        continue;
      }
      const n = Math.min(QUANTUM, flow.pending);
      if (this.tokens < n) {
        const waitMs = Math.max(1, Math.ceil(((n - this.tokens) / this.rate) * 1000));
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, waitMs);
        return;
      }
      this.tokens -= n;
      this.bytes += n;
      this.ready.shift();
      flow.queued = false;
      flow.send(n);
      if (flow.pending > 0 && !flow.waitingDrain && !flow.dead) {
        flow.queued = true;
        this.ready.push(flow);
      }
    }
  }

  close() {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.ready = [];
  }
}

/** Bytes from one socket to another through a bucket. */
class Flow {
  /**
   * @param {Bucket} bucket
   * @param {import('node:net').Socket} src
   * @param {import('node:net').Socket} dst
   */
  constructor(bucket, src, dst) {
    this.bucket = bucket;
    this.src = src;
    this.dst = dst;
    /** @type {Buffer[]} */
    this.chunks = [];
    this.pending = 0;
    this.queued = false;
    this.waitingDrain = false;
    this.srcEnded = false;
    this.dead = false;
    src.on('data', (chunk) => {
      this.chunks.push(chunk);
      this.pending += chunk.length;
      if (this.pending >= HIGH_WATER) src.pause();
      bucket.enqueue(this);
    });
    src.on('end', () => {
      this.srcEnded = true;
      this.maybeEnd();
    });
    dst.on('drain', () => {
      this.waitingDrain = false;
      bucket.enqueue(this);
    });
  }

  /** Write the next n pending bytes to the receiver. @param {number} n */
  send(n) {
    const parts = [];
    let left = n;
    while (left > 0) {
      const head = /** @type {Buffer} */ (this.chunks[0]);
      if (head.length <= left) {
        parts.push(head);
        this.chunks.shift();
        left -= head.length;
      } else {
        parts.push(head.subarray(0, left));
        this.chunks[0] = head.subarray(left);
        left = 0;
      }
    }
    this.pending -= n;
    const ok = this.dst.write(parts.length === 1 ? parts[0] : Buffer.concat(parts));
    if (!ok) this.waitingDrain = true;
    if (this.pending < HIGH_WATER / 2 && this.src.isPaused() && !this.srcEnded) this.src.resume();
    this.maybeEnd();
  }

  maybeEnd() {
    if (this.srcEnded && this.pending === 0 && !this.dead) {
      this.dead = true;
      this.dst.end();
    }
  }

  kill() {
    this.dead = true;
    this.chunks = [];
    this.pending = 0;
  }
}

/**
 * Start a link: listen on 127.0.0.1 (listenHost) : listenPort (0 = a free port), forward every
 * connection to targetHost:targetPort through the shared buckets.
 * @param {{ listenPort?: number, listenHost?: string, targetHost: string, targetPort: number,
 *   bytesPerSecond: number, burstBytes?: number }} opts
 * @returns {Promise<{ port: number, close(): Promise<void>,
 *   stats(): { bytesDown: number, bytesUp: number, connections: number, active: number } }>}
 */
export function startLink(opts) {
  const burst = opts.burstBytes ?? DEFAULT_BURST;
  if (!(opts.bytesPerSecond > 0)) throw new Error('bytesPerSecond must be positive');
  if (burst < QUANTUM) throw new Error(`the burst must be at least ${QUANTUM} bytes`);
  const down = new Bucket(opts.bytesPerSecond, burst);
  const up = new Bucket(opts.bytesPerSecond, burst);
  /** @type {Set<import('node:net').Socket>} */
  const sockets = new Set();
  let connections = 0;
  let active = 0;

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    connections++;
    active++;
    // Both sides stay paused (a 'data' listener does not resume an explicitly paused socket)
    // until the target is connected.
    client.pause();
    const target = connect({ host: opts.targetHost, port: opts.targetPort, allowHalfOpen: true });
    target.pause();
    sockets.add(client);
    sockets.add(target);
    client.setNoDelay(true);
    target.setNoDelay(true);
    const upFlow = new Flow(up, client, target);
    const downFlow = new Flow(down, target, client);
    let closed = 0;
    const onClose = () => {
      if (++closed === 2) active--;
    };
    const fail = () => {
      upFlow.kill();
      downFlow.kill();
      client.destroy();
      target.destroy();
    };
    client.on('error', fail);
    target.on('error', fail);
    client.on('close', () => {
      sockets.delete(client);
      // The client is gone: nothing can reach it any more.
      downFlow.kill();
      if (!upFlow.srcEnded || upFlow.dead) target.destroy();
      onClose();
    });
    target.on('close', () => {
      sockets.delete(target);
      upFlow.kill();
      if (!downFlow.srcEnded || downFlow.dead) client.destroy();
      onClose();
    });
    target.once('connect', () => {
      target.resume();
      client.resume();
    });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenPort ?? 0, opts.listenHost ?? '127.0.0.1', () => {
      server.off('error', reject);
      const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
      resolve({
        port: addr.port,
        stats: () => ({ bytesDown: down.bytes, bytesUp: up.bytes, connections, active }),
        close: () =>
          new Promise((done) => {
            down.close();
            up.close();
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

/** @param {string} s */
function hostPort(s) {
  const i = s.lastIndexOf(':');
  if (i <= 0) throw new Error(`HOST:PORT expected, got "${s}"`);
  const port = Number(s.slice(i + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port in "${s}"`);
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

// ---------------------------------------------------------------------------------------------
// Self-test: push data through at 100 Mbit/s with 1 and with 4 connections; the total rate
// must be the link's rate both times.

/**
 * @param {number} rate bytes per second
 * @param {number} conns parallel connections
 * @param {number} total bytes in all
 * @param {'down' | 'up'} direction
 */
async function measure(rate, conns, total, direction) {
  const per = Math.floor(total / conns);
  const payload = Buffer.alloc(per, 0x61);
  let received = 0;
  /** @type {() => void} */
  let allIn = () => {};
  const done = new Promise((r) => (allIn = () => r(undefined)));
  const target = createServer({ allowHalfOpen: true }, (s) => {
    if (direction === 'down') s.end(payload);
    else {
      s.on('data', (d) => {
        received += d.length;
        if (received >= per * conns) allIn();
      });
      s.on('end', () => s.end());
    }
  });
  await new Promise((r) => target.listen(0, '127.0.0.1', () => r(undefined)));
  const targetPort = /** @type {import('node:net').AddressInfo} */ (target.address()).port;
  const link = await startLink({ targetHost: '127.0.0.1', targetPort, bytesPerSecond: rate });
  const t0 = process.hrtime.bigint();
  const clients = [];
  for (let i = 0; i < conns; i++) {
    clients.push(
      new Promise((resolve, reject) => {
        const c = connect({ host: '127.0.0.1', port: link.port, allowHalfOpen: true });
        c.on('error', reject);
        if (direction === 'down') {
          c.on('data', (d) => {
            received += d.length;
            if (received >= per * conns) allIn();
          });
          c.on('end', () => {
            c.end();
            resolve(undefined);
          });
        } else {
          c.end(payload);
          c.on('data', () => {});
          c.on('end', () => resolve(undefined));
        }
      }),
    );
  }
  await Promise.all([done, ...clients]);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const stats = link.stats();
  await link.close();
  await new Promise((r) => target.close(() => r(undefined)));
  if (received !== per * conns) throw new Error(`received ${received} of ${per * conns} bytes`);
  return { secs, bytes: received, mbps: received / secs / 1e6, stats };
}

async function selftest() {
  const rate = parseRate('100mbit');
  const total = 20 * 1000 * 1000;
  console.log(`link self-test: ${total / 1e6} MB at 100 Mbit/s = ${(rate / 1e6).toFixed(1)} MB/s`);
  let ok = true;
  for (const [conns, direction] of /** @type {const} */ ([
    [1, 'down'],
    [4, 'down'],
    [4, 'up'],
  ])) {
    const r = await measure(rate, conns, total, direction);
    // The burst lets the first 64 KiB through at once: allow a few percent above the rate.
    const good = r.mbps <= (rate / 1e6) * 1.05 && r.mbps >= (rate / 1e6) * 0.85;
    ok &&= good;
    console.log(
      `${conns} connection(s), ${direction}: ${(r.bytes / 1e6).toFixed(1)} MB in ${r.secs.toFixed(2)} s = ` +
        `${r.mbps.toFixed(2)} MB/s total${good ? '' : '  <-- OUT OF BOUNDS'} ` +
        `(link counted down ${r.stats.bytesDown}, up ${r.stats.bytesUp})`,
    );
  }
  console.log(ok ? 'self-test passed' : 'self-test FAILED');
  process.exitCode = ok ? 0 : 1;
}

async function main(argv) {
  if (argv.includes('--selftest')) return selftest();
  /** @type {Record<string, string>} */
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--') || i + 1 >= argv.length) throw new Error(`unexpected argument "${a}"`);
    args[a.slice(2)] = argv[++i];
  }
  for (const k of Object.keys(args)) {
    if (!['listen', 'target', 'rate', 'burst'].includes(k)) throw new Error(`unknown option --${k}`);
  }
  if (args.target === undefined || args.rate === undefined) {
    throw new Error('usage: link.mjs --listen HOST:PORT --target HOST:PORT --rate 100mbit [--burst 64KiB]');
  }
  const listen = hostPort(args.listen ?? '127.0.0.1:0');
  const target = hostPort(args.target);
  if (target.port === 0) throw new Error('--target needs a port');
  const link = await startLink({
    listenHost: listen.host,
    listenPort: listen.port,
    targetHost: target.host,
    targetPort: target.port,
    bytesPerSecond: parseRate(args.rate),
    ...(args.burst !== undefined ? { burstBytes: parseRate(args.burst) } : {}),
  });
  console.log(`link ${listen.host}:${link.port} -> ${target.host}:${target.port} at ${args.rate}`);
  const stop = async () => {
    await link.close();
    const s = link.stats();
    console.log(
      `link closed: ${s.connections} connections, ${s.bytesDown} bytes down, ${s.bytesUp} bytes up`,
    );
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(`link: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(2);
  });
}
