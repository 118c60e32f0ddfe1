// The Node.js floor of B1 (issue #12): the least a Node.js program needs for the irreducible
// work of `nydus-image create --compressor zstd` on the same data, with none of RAFS: walk the
// source directory and lstat every entry, read every regular file in chunks of the build's size
// (1 MiB), compress each chunk with the same native binding as the builder (the system libzstd
// through koffi, level 3, codec/native.js of the build given), optionally digest it with blake3
// (the chunk ids RAFS requires, @napi-rs/blake-hash as the builder), and write the compressed
// bytes to one file. No tree, no bootstrap, no blob meta, no sha256 of the blob, no check that a
// file changed while it was read, and the chunks land in the file in the order they are done (a
// blob needs the order of the files). It runs in the builder's worker setup, made as cheap as it
// can be: one worker per core (availableParallelism, as the builder), the main thread walks and
// publishes the chunks into shared memory as it goes, the workers take them from there (no
// message per chunk), read them themselves (the files of a claim opened together with
// posix_fadvise WILLNEED, as the builder), and write each compressed chunk at a place reserved
// with one atomic add (pwrite: no hand-back to the main thread).
//
//   node bench/b1-floor.mjs --codec BUILD/src/codec [--no-digest] SRC OUT_FILE
//
// Prints one JSON line: files, chunks, bytes read and written.

import { closeSync, lstatSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const CHUNK = 1024 * 1024;
/** Jobs a worker claims at once: their files are opened together and read ahead. */
const CLAIM = 16;
/** Jobs published at once by the walk. */
const PUBLISH = 32;
/** Room for the path bytes and the jobs (shared memory is committed only where written). */
const PATH_BYTES = 256 * 1024 * 1024;
const MAX_JOBS = 1 << 22;
// ctrl slots
const PUB = 0;
const NEXT = 1;
const DONE = 2;

try {
  if (isMainThread) await main();
  else await worker();
} catch (e) {
  // A worker's failure reaches main() as the rejection of its result, and ends here too.
  if (!isMainThread) throw e;
  console.error(`b1-floor: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}

async function main() {
  const args = process.argv.slice(2);
  let codec = '';
  let digestOn = true;
  const rest = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--codec') codec = args[++i] ?? '';
    else if (args[i] === '--no-digest') digestOn = false;
    else rest.push(args[i]);
  }
  if (codec === '' || rest.length !== 2) {
    console.error('usage: node bench/b1-floor.mjs --codec BUILD/src/codec [--no-digest] SRC OUT_FILE');
    process.exit(2);
  }
  const [src, out] = /** @type {[string, string]} */ (rest.map((p) => resolve(/** @type {string} */ (p))));
  closeSync(openSync(out, 'w'));
  const ctrl = new Int32Array(new SharedArrayBuffer(16));
  const pos = new BigInt64Array(new SharedArrayBuffer(8));
  const paths = new Uint8Array(new SharedArrayBuffer(PATH_BYTES));
  // Per job: path start, path length, offset in the file, length.
  const jobs = new Float64Array(new SharedArrayBuffer(MAX_JOBS * 4 * 8));
  const shared = { ctrl, pos, paths, jobs, out, codec: resolve(codec), digestOn };
  const threads = Math.max(1, availableParallelism());
  const workers = [];
  for (let i = 0; i < threads; i++)
    workers.push(new Worker(new URL(import.meta.url), { workerData: shared }));
  const results = workers.map(
    (w) =>
      /** @type {Promise<{ chunks: number, read: number, written: number }>} */ (
        new Promise((res, rej) => {
          w.once('message', res);
          w.once('error', rej);
        })
      ),
  );
  const encoder = new TextEncoder();
  /** @type {Set<string>} */
  const linked = new Set();
  let pathAt = 0;
  let n = 0;
  let files = 0;
  const publish = () => {
    Atomics.store(ctrl, PUB, n);
    Atomics.notify(ctrl, PUB);
  };
  /** @param {string} dir */
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size > 0) {
        files++;
        // A hard link's data is read once, as the builder does.
        if (st.nlink > 1) {
          const key = `${st.dev}:${st.ino}`;
          if (linked.has(key)) continue;
          linked.add(key);
        }
        const start = pathAt;
        const { written } = encoder.encodeInto(p, paths.subarray(pathAt));
        if (pathAt + written >= PATH_BYTES) throw new Error('too many path bytes');
        pathAt += written;
        for (let off = 0; off < st.size; off += CHUNK) {
          if (n >= MAX_JOBS) throw new Error('too many chunks');
          const j = n * 4;
          jobs[j] = start;
          jobs[j + 1] = written;
          jobs[j + 2] = off;
          jobs[j + 3] = Math.min(CHUNK, st.size - off);
          n++;
          if (n % PUBLISH === 0) publish();
        }
      } else if (st.isFile()) files++;
    }
  };
  walk(src);
  publish();
  Atomics.store(ctrl, DONE, 1);
  Atomics.notify(ctrl, PUB);
  const done = await Promise.all(results);
  await Promise.all(workers.map((w) => w.terminate()));
  const sum = (/** @type {'chunks' | 'read' | 'written'} */ k) => done.reduce((t, d) => t + d[k], 0);
  console.log(
    JSON.stringify({
      files,
      chunks: sum('chunks'),
      read: sum('read'),
      written: sum('written'),
      digest: digestOn ? 'blake3' : 'none',
      threads,
    }),
  );
}

async function worker() {
  const { ctrl, pos, paths, jobs, out, codec, digestOn } = workerData;
  const native = await import(pathToFileURL(join(codec, 'native.js')).href);
  const zstd = native.nativeZstd();
  if (zstd === undefined) throw new Error('no system libzstd: the floor needs the binding the builder uses');
  const willNeed = native.nativeWillNeed();
  /** @type {(d: Uint8Array) => Buffer} */
  const blake3 = digestOn
    ? createRequire(join(codec, 'digest.js'))('@napi-rs/blake-hash').blake3
    : () => Buffer.alloc(0);
  const fd = openSync(out, 'r+');
  const scratch = Buffer.allocUnsafeSlow(CHUNK);
  // zstd's bound for 1 MiB (ZSTD_COMPRESSBOUND).
  const dst = Buffer.allocUnsafeSlow(CHUNK + (CHUNK >> 8) + 1024);
  const decoder = new TextDecoder();
  let chunks = 0;
  let read = 0;
  let written = 0;
  /** Wait until job i is published; false when the walk ended before it. */
  const ready = (/** @type {number} */ i) => {
    for (;;) {
      const pub = Atomics.load(ctrl, PUB);
      if (i < pub) return true;
      if (Atomics.load(ctrl, DONE) === 1 && i >= Atomics.load(ctrl, PUB)) return false;
      Atomics.wait(ctrl, PUB, pub, 20);
    }
  };
  for (;;) {
    const first = Atomics.add(ctrl, NEXT, CLAIM);
    if (!ready(first)) break;
    const last = first + CLAIM;
    /** @type {{ fd: number, j: number }[]} */
    const claim = [];
    let prevStart = -1;
    let prevFd = -1;
    for (let i = first; i < last && ready(i); i++) {
      const j = i * 4;
      const start = jobs[j];
      if (start !== prevStart) {
        const p = decoder.decode(paths.subarray(start, start + jobs[j + 1]));
        prevFd = openSync(p, 'r');
        prevStart = start;
        if (willNeed !== undefined) willNeed(prevFd, jobs[j + 2], jobs[j + 3]);
      }
      claim.push({ fd: prevFd, j });
    }
    for (let c = 0; c < claim.length; c++) {
      const { fd: f, j } = /** @type {{ fd: number, j: number }} */ (claim[c]);
      const len = jobs[j + 3];
      let got = 0;
      while (got < len) {
        const r = readSync(f, scratch, got, len - got, jobs[j + 2] + got);
        if (r === 0) break;
        got += r;
      }
      const data = scratch.subarray(0, got);
      if (digestOn) blake3(data);
      let w = zstd.compressInto(data, dst);
      let stored = dst;
      if (w >= got) {
        stored = scratch;
        w = got;
      }
      const at = Atomics.add(pos, 0, BigInt(w));
      writeSync(fd, stored, 0, w, Number(at));
      chunks++;
      read += got;
      written += w;
      if (c + 1 === claim.length || claim[c + 1]?.fd !== f) closeSync(f);
    }
  }
  closeSync(fd);
  parentPort?.postMessage({ chunks, read, written });
}
