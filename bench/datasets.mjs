// Data sets for the build benchmark, made on this machine (nothing downloaded but Debian's
// packages for the rootfs) and cached under the work directory. A data set is ready when its
// `.done.json` marker exists and carries the current generator version; anything else is
// rebuilt from scratch.
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';

/** Bump when a generator changes: cached data sets made by an older one are rebuilt. */
const GENERATOR_VERSION = 1;

export const SMALL_FILE_MAX = 16 * 1024;

/**
 * @typedef {object} DataSet
 * @property {string} name
 * @property {string} dir source directory (undefined when skipped)
 * @property {string} description how it was made
 * @property {{ files: number, dirs: number, symlinks: number, other: number, bytes: number, depth: number }} [stats]
 *   entry counts, bytes of regular files (apparent size, hardlinks counted once), deepest level
 * @property {number} [prepSeconds] time spent making it in this run (0 when cached)
 * @property {string} [skipped] why the data set could not be made
 */

/**
 * Small fast deterministic PRNG (mulberry32).
 * @param {number} seed
 * @returns {() => number} uint32 values
 */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * Counts the entries of a tree (regular files by inode, so hardlinks once).
 * @param {string} root
 */
export function treeStats(root) {
  const s = { files: 0, dirs: 0, symlinks: 0, other: 0, bytes: 0, depth: 0 };
  const seen = new Set();
  /**
   * @param {string} d
   * @param {number} depth
   */
  const walk = (d, depth) => {
    s.depth = Math.max(s.depth, depth);
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p, { bigint: true });
      if (st.isDirectory()) {
        s.dirs++;
        walk(p, depth + 1);
      } else if (st.isFile()) {
        s.files++;
        const key = `${st.dev}:${st.ino}`;
        if (!seen.has(key)) {
          seen.add(key);
          s.bytes += Number(st.size);
        }
      } else if (st.isSymbolicLink()) s.symlinks++;
      else s.other++;
    }
  };
  walk(root, 0);
  return s;
}

/**
 * The cached data set at `dir`, or undefined when it must be made again.
 * @param {string} dir
 * @param {string} params what the generator was asked for
 * @returns {DataSet['stats'] | undefined}
 */
function cached(dir, params) {
  const marker = `${dir}.done.json`;
  if (!existsSync(marker) || !existsSync(dir)) return undefined;
  try {
    const m = JSON.parse(readFileSync(marker, 'utf8'));
    return m.version === GENERATOR_VERSION && m.params === params ? m.stats : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Makes `dir` with `make(tmpDir)` unless it is cached; the result is renamed into place and
 * marked only once complete.
 * @param {string} dir
 * @param {string} params what the generator is asked for (a change rebuilds the data set)
 * @param {(tmp: string) => void} make
 * @returns {{ stats: NonNullable<DataSet['stats']>, prepSeconds: number }}
 */
function ensure(dir, params, make) {
  const hit = cached(dir, params);
  if (hit !== undefined) return { stats: hit, prepSeconds: 0 };
  const t0 = performance.now();
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
  rmSync(`${dir}.done.json`, { force: true });
  mkdirSync(dirname(dir), { recursive: true });
  make(tmp);
  renameSync(tmp, dir);
  const stats = treeStats(dir);
  writeFileSync(`${dir}.done.json`, JSON.stringify({ version: GENERATOR_VERSION, params, stats }));
  return { stats, prepSeconds: (performance.now() - t0) / 1000 };
}

const WORDS = (() => {
  const next = prng(7);
  const letters = 'etaoinshrdlucmfwypvbgkqjxz';
  const out = [];
  for (let i = 0; i < 2000; i++) {
    let w = '';
    const len = 2 + (next() % 9);
    // Skewed letter choice, like text.
    for (let j = 0; j < len; j++) w += letters[Math.min(next() % 26, next() % 26)];
    out.push(w);
  }
  return out;
})();

/**
 * Log-like text: timestamps, levels, identifiers and words with random fields.
 * @param {() => number} next
 * @param {number} size
 */
function textBytes(next, size) {
  const levels = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
  const parts = [];
  let len = 0;
  let ts = 1_700_000_000_000;
  while (len < size) {
    ts += next() % 5000;
    const nWords = 3 + (next() % 12);
    let msg = '';
    for (let i = 0; i < nWords; i++) msg += `${WORDS[Math.min(next() % 2000, next() % 2000)]} `;
    const line =
      `${new Date(ts).toISOString()} ${levels[next() % levels.length]} worker-${next() % 32} ` +
      `req=${(next() >>> 8).toString(16)} path=/api/v1/items/${next() % 100000} ` +
      `status=${next() % 8 === 0 ? 500 : 200} bytes=${next() % 65536} ${msg}\n`;
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join(''), 'latin1').subarray(0, size);
}

/**
 * Structured binary records (64 bytes): counters, small fields, a few random bytes, padding.
 * @param {() => number} next
 * @param {number} size
 * @param {number} seq first record number
 */
function recordBytes(next, size, seq) {
  const buf = Buffer.alloc(size);
  for (let off = 0; off + 64 <= size; off += 64, seq++) {
    buf.writeUInt32LE(seq, off);
    buf.writeUInt32LE(0x1000 + (seq >>> 4), off + 4);
    buf.writeUInt16LE(next() % 1000, off + 8);
    buf.writeUInt16LE(next() % 4, off + 10);
    buf.writeUInt32LE(next(), off + 12);
    buf.write('item-', off + 16, 'latin1');
    buf.write(WORDS[next() % 64] ?? '', off + 21, 'latin1');
    buf.writeDoubleLE((next() % 10000) / 100, off + 40);
  }
  return buf;
}

/**
 * @param {string} path
 * @param {number} size
 * @param {(offset: number, size: number) => Buffer} piece
 */
function writePieces(path, size, piece) {
  const fd = openSync(path, 'w');
  try {
    const step = 4 * 1024 * 1024;
    for (let off = 0; off < size; off += step) {
      const b = piece(off, Math.min(step, size - off));
      let done = 0;
      while (done < b.length) done += writeSync(fd, b, done);
    }
  } finally {
    closeSync(fd);
  }
}

/** The sizes of the data sets whose directories keep their historic names (data/big-files,
 * data/many-small): the quick mode's. Other sizes live in directories named after the size, so
 * that the quick and the full data sets are cached side by side. */
export const QUICK_SIZES = { bigMiB: 96, bigCount: 4, smallFiles: 20_000 };

/**
 * big-files: `count` files of `mib` MiB, half compressible (log-like text and structured records,
 * alternating), half random.
 * @param {string} root work directory
 * @param {number} mib size of each file
 * @param {number} [count] number of files (even; 4)
 * @returns {DataSet}
 */
export function bigFiles(root, mib, count = 4) {
  const historic = mib === QUICK_SIZES.bigMiB && count === QUICK_SIZES.bigCount;
  const dir = join(root, 'data', historic ? 'big-files' : `big-files-${count}x${mib}m`);
  const BIG_FILE_BYTES = mib * 1024 * 1024;
  const half = Math.ceil(count / 2);
  const { stats, prepSeconds } = ensure(dir, count === 4 ? `${mib} MiB` : `${count} x ${mib} MiB`, (tmp) => {
    mkdirSync(tmp, { recursive: true });
    for (let i = 0; i < half; i++) {
      // Seeds 1 and 2 (and names) as the first generator had them for the first two files.
      const seed = i < 2 ? i + 1 : 10 + i;
      const suffix = i < 2 ? '' : `-${Math.floor(i / 2) + 1}`;
      if (i % 2 === 0) {
        const t = prng(seed);
        writePieces(join(tmp, `compressible-text${suffix}.log`), BIG_FILE_BYTES, (_o, n) => textBytes(t, n));
      } else {
        const r = prng(seed);
        writePieces(join(tmp, `compressible-records${suffix}.bin`), BIG_FILE_BYTES, (o, n) =>
          recordBytes(r, n, o / 64),
        );
      }
    }
    for (let i = 1; i <= count - half; i++) {
      const src = openSync('/dev/urandom', 'r');
      try {
        writePieces(join(tmp, `random-${i}.bin`), BIG_FILE_BYTES, (_o, n) => {
          const b = Buffer.allocUnsafe(n);
          let got = 0;
          while (got < n) got += readSync(src, b, got, n - got, null);
          return b;
        });
      } finally {
        closeSync(src);
      }
    }
  });
  return {
    name: 'big-files',
    dir,
    description:
      `${count} files of ${mib} MiB: ${half} compressible (log-like text and 64-byte structured records ` +
      `made with a seeded PRNG) and ${count - half} read from /dev/urandom (incompressible).`,
    stats,
    prepSeconds,
  };
}

/**
 * many-small: `count` files of 0-16 KiB in a deep directory tree, all from a seeded PRNG: 60%
 * text, 25% structured records, 10% random bytes, 5% copies of an earlier file.
 * @param {string} root work directory
 * @param {number} count
 * @returns {DataSet}
 */
export function manySmall(root, count) {
  const dir = join(root, 'data', count === QUICK_SIZES.smallFiles ? 'many-small' : `many-small-${count}`);
  const { stats, prepSeconds } = ensure(dir, `${count} files`, (tmp) => {
    const next = prng(3);
    mkdirSync(tmp, { recursive: true });
    // Directories: each new one goes under a recent one (deep chains) or any one (breadth).
    /** @type {{ path: string, depth: number }[]} */
    const dirs = [{ path: tmp, depth: 0 }];
    for (let i = 0; i < 1500; i++) {
      const pick =
        next() % 3 === 0
          ? dirs[dirs.length - 1 - (next() % Math.min(8, dirs.length))]
          : dirs[next() % dirs.length];
      const parent = pick && pick.depth < 24 ? pick : dirs[0];
      if (parent === undefined) throw new Error('unreachable');
      const path = join(parent.path, `d${i.toString(36)}-${WORDS[next() % 2000]}`);
      mkdirSync(path);
      dirs.push({ path, depth: parent.depth + 1 });
    }
    /** @type {Buffer[]} */
    const made = [];
    for (let i = 0; i < count; i++) {
      const d = dirs[next() % dirs.length];
      if (d === undefined) throw new Error('unreachable');
      const kind = next() % 100;
      const size = next() % (SMALL_FILE_MAX + 1);
      let data;
      if (kind < 5 && made.length > 0) data = made[next() % made.length] ?? Buffer.alloc(0);
      else if (kind < 65) data = textBytes(next, size);
      else if (kind < 90) data = recordBytes(next, size, next() % 100000);
      else {
        data = Buffer.allocUnsafe(size);
        for (let j = 0; j < size; j++) data[j] = next() & 0xff;
      }
      if (made.length < 512) made.push(data);
      writeFileSync(join(d.path, `f${i.toString(36)}.${['txt', 'bin', 'dat', 'json'][kind % 4]}`), data);
    }
  });
  return {
    name: 'many-small',
    dir,
    description:
      `${count} files of 0-${SMALL_FILE_MAX / 1024} KiB (uniform sizes) in a deep tree of 1500 ` +
      'directories, from a seeded PRNG: about 60% log-like text, 25% structured records, ' +
      '10% random bytes, 5% copies of earlier files.',
    stats,
    prepSeconds,
  };
}

/**
 * rootfs: `debootstrap --variant=minbase bookworm`, from the Debian mirror apt uses.
 * @param {string} root work directory
 * @param {(msg: string) => void} say
 * @returns {DataSet}
 */
export function rootfs(root, say) {
  const dir = join(root, 'data', 'rootfs');
  const base = {
    name: 'rootfs',
    dir,
    description: 'Debian 12 minimal root filesystem: `debootstrap --variant=minbase bookworm DIR`.',
  };
  try {
    const { stats, prepSeconds } = ensure(dir, 'minbase bookworm', (tmp) => {
      const log = `${dir}.debootstrap.log`;
      say(`debootstrap --variant=minbase bookworm ${tmp} (log: ${log})`);
      const fd = openSync(log, 'w');
      const r = spawnSync('debootstrap', ['--variant=minbase', 'bookworm', tmp], {
        stdio: ['ignore', fd, fd],
      });
      closeSync(fd);
      if (r.error !== undefined || r.status !== 0) {
        const tail = existsSync(log)
          ? readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' / ')
          : '';
        throw new Error(
          `debootstrap failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${tail || 'no output'}`,
        );
      }
    });
    return { ...base, stats, prepSeconds };
  } catch (e) {
    return { ...base, skipped: e instanceof Error ? e.message : String(e) };
  }
}
