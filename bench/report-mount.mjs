// The B2, B3 and B6 part of BENCHMARKS.md, from the measurements of one run of mount.mjs. As in
// B1's part, every number and sentence comes from those measurements.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import { fx, int, machineSection, md, partHeading, pct, plural } from './report-common.mjs';

/** @param {number} kib */
const mib = (kib) => fx(kib / 1024, 1);

/**
 * The bar of ../shared/docs/benchmarks.md (issue #12): B2 and B3 as ratios of times ours/peer;
 * B6 as our daemon's RSS in MiB: the peak during B3, once idle after a mount, and the growth per
 * extra image mounted in the same daemon through the API (memory.mjs).
 */
export const BAR = { squashfuse: 1.0, erofs: 1.5, peakB3MiB: 96, idleMiB: 64, perImageMiB: 8 };

/**
 * @typedef {import('./datasets.mjs').DataSet} DataSet
 * @typedef {import('./mount.mjs').MountResult} MountResult
 * @typedef {import('./mount.mjs').MountTool} MountTool
 * @typedef {import('./mount.mjs').Image} Image
 * @typedef {{ waited: number, repeated: number, keptDisturbed: number }} Quiet
 * @typedef {{
 *   kind: 'mount',
 *   command: string,
 *   config: { work: string, rounds: number, sets: string[], bigMiB: number, smallFiles: number, only: string[] },
 *   phases: { b2: boolean, b3: boolean, b6: boolean },
 *   date: string,
 *   machine: ReturnType<typeof import('./run.mjs').machine> & {
 *     mountVersions: ReturnType<typeof import('./mount.mjs').mountVersions> },
 *   sets: DataSet[],
 *   fewRounds?: number,
 *   measured: { ds: DataSet, images: Record<string, Image>, results: MountResult[], quiet: Quiet }[],
 *   cachesDropped: boolean,
 *   imageSeconds: number,
 *   benchSeconds: number,
 *   totalSeconds: number,
 *   tools: MountTool[],
 * }} MountInput
 */

/**
 * Ratio of median times ours/peer in one phase (below 1: we are faster).
 * @param {MountResult | undefined} ours
 * @param {MountResult | undefined} peer
 * @param {'b2' | 'b3'} ph
 */
export function timeRatio(ours, peer, ph) {
  const a = ours?.median?.[ph]?.wall;
  const b = peer?.median?.[ph]?.wall;
  return a !== undefined && b !== undefined ? a / b : NaN;
}

/**
 * Our daemon's peak RSS during B3 in KiB, and whether it was measured alone: runs saved before
 * the peak was reset ahead of B3 have only the peak over B2 and B3 (at least the B3 one).
 * @param {MountResult | undefined} r
 * @returns {{ kib: number, alone: boolean }}
 */
export function b3Peak(r) {
  const m = r?.median;
  if (m?.b3HwmKiB !== undefined) return { kib: m.b3HwmKiB, alone: true };
  return { kib: m?.hwmKiB ?? NaN, alone: false };
}

/**
 * The RSS growth per extra image mounted in one daemon through the API, in KiB, from the result
 * of memory.mjs (NaN when it is not there).
 * @param {any} memory the saved memory part ({ result }) or undefined
 */
export function perImageKiB(memory) {
  const r = memory?.result;
  if (r === undefined || r === null) return NaN;
  // memory.mjs: one row per image mounted in turn; the largest growth is the figure.
  if (Array.isArray(r.perImage) && r.perImage.length > 0)
    return Math.max(...r.perImage.map((/** @type {any} */ x) => Number(x.deltaMiB) * 1024));
  for (const v of [
    r.perImageKiB,
    r.extraImageKiB,
    r.perExtraImageKiB,
    r.perImage?.kib,
    r.perImage?.medianKiB,
  ]) {
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return NaN;
}

/** The FUSE daemons in C measured beside ours (peers and context rows). */
const FUSE_PEERS = ['squashfuse', 'squashfuse_ll', 'squashfuse-ra1m'];

/**
 * The floor of the EROFS bar measured in the same run: the fastest FUSE daemon in C against
 * kernel EROFS in one phase. Every FUSE daemon pays the same round trips through the kernel, so
 * when the fastest C one is above the bar, the bar is below what FUSE allows on this machine.
 * @param {MountResult[]} results
 * @param {'b2' | 'b3'} ph
 * @returns {{ ratio: number, label: string }}
 */
export function fuseFloor(results, ph) {
  const er = get(results, 'erofs');
  let best = { ratio: NaN, label: '' };
  for (const id of FUSE_PEERS) {
    const peer = get(results, id);
    const r = timeRatio(peer, er, ph);
    if (Number.isFinite(r) && !(r >= best.ratio)) best = { ratio: r, label: peer?.tool.label ?? id };
  }
  return best;
}

/**
 * When ours misses the EROFS bar in a phase (`e`, ours/EROFS), the sentence that gives the floor
 * measured beside it (fuseFloor); empty otherwise.
 * @param {MountResult[]} results
 * @param {'b2' | 'b3'} ph
 * @param {number} e
 */
function floorText(results, ph, e) {
  const f = fuseFloor(results, ph);
  if (!(e > BAR.erofs) || !Number.isFinite(f.ratio)) return '';
  return (
    ` The EROFS bar's floor in ${ph.toUpperCase()} here: the fastest FUSE daemon in C, ${f.label}, takes ` +
    `**${fx(f.ratio)}x** kernel EROFS on this set${f.ratio > BAR.erofs ? ` (above the ${fx(BAR.erofs, 1)} bar too)` : ''}; ` +
    `ours is ${fx(e / f.ratio)}x that daemon. Every FUSE request crosses the kernel and back (the round-trip floor ` +
    'is in the request-cost part), which kernel EROFS never does.'
  );
}

/**
 * The verdict of a bar cell for a walk of a few entries (big-files: 5), where the time is find's own start and
 * not the daemon's work: when our median is above the bar but inside the min-max spread of the
 * peer's runs, the difference is not measurable and the cell says so instead of "missed".
 * @param {MountResult | undefined} ours
 * @param {MountResult | undefined} peer
 * @param {'b2' | 'b3'} ph
 * @param {number} bar
 * @returns {string | undefined}
 */
function tieNote(ours, peer, ph, bar) {
  const a = ours?.median?.[ph];
  const b = peer?.median?.[ph];
  if (a === undefined || b === undefined || a.output >= 100) return undefined;
  const r = a.wall / b.wall;
  if (!(r > bar) || a.min > b.max * bar) return undefined;
  return `tie: ${fx((a.wall - b.wall * bar) * 1000, 1)} ms over, inside the peer's ${fx(b.min)}-${fx(b.max)} s spread`;
}

/**
 * The size of our image's bootstrap in bytes (NaN when unknown): saved with the image, or read
 * from the image directory for runs saved before it was.
 * @param {Image | undefined} img
 */
function bootstrapBytes(img) {
  if (img?.bootstrapBytes !== undefined) return img.bootstrapBytes;
  try {
    return img !== undefined ? statSync(join(img.dir, 'bootstrap')).size : NaN;
  } catch {
    return NaN;
  }
}

/**
 * For an RSS above its bar: how big the image's bootstrap is (its metadata, which grows with its
 * file count; nydusd maps it, and the pages it has read count in its RSS as file-backed
 * memory), as " (its bootstrap ...; ... without it)".
 * @param {number} kib
 * @param {number} barMiB
 * @param {Image | undefined} img
 */
function withoutBootstrap(kib, barMiB, img) {
  const rss = kib / 1024;
  const b = bootstrapBytes(img) / 1048576;
  if (!(rss > barMiB) || !Number.isFinite(b)) return '';
  return ` (its bootstrap, mapped, at most: ${fx(b, 1)} MiB; ${fx(rss - b, 1)} without it)`;
}

/** @param {number} r @param {number} bar */
const verdict = (r, bar) => (Number.isFinite(r) ? (r <= bar ? 'met' : 'missed') : 'n/a');

/** A figure in MiB against its bar: "81.2 (met)". @param {number} kib @param {number} barMiB */
const mibCell = (kib, barMiB) => `${mib(kib)} (${verdict(kib / 1024, barMiB)})`;

/**
 * @param {MountResult[]} results
 * @param {string} id
 */
const get = (results, id) => results.find((r) => r.tool.id === id);

/** Ratio columns of the B2 and B3 tables, for our rows. */
const RATIO_COLUMNS = [
  { id: 'squashfuse', head: `ours/squashfuse (bar ≤ ${fx(BAR.squashfuse, 1)})` },
  { id: 'erofs', head: `ours/kernel EROFS (bar ≤ ${fx(BAR.erofs, 1)})` },
  { id: 'squashfuse_ll', head: 'ours/squashfuse_ll' },
  { id: 'squashfuse-ra1m', head: 'ours/squashfuse read-ahead 1 MiB' },
];

/**
 * @param {DataSet} ds
 * @param {MountResult[]} results
 * @param {'b2' | 'b3'} ph
 */
function phaseTable(ds, results, ph) {
  const bytes = ds.stats?.bytes ?? NaN;
  const columns = RATIO_COLUMNS.filter((c) => get(results, c.id) !== undefined);
  const head = [
    'tool',
    'median s',
    'min-max s',
    ...(ph === 'b2' ? ['entries', 'µs per entry'] : ['MB/s', 'tar bytes']),
    ph === 'b2' ? 'find CPU s' : 'tar + wc CPU s',
    'daemon CPU s',
    'kernel threads CPU s',
    'others CPU s',
    ...columns.map((c) => c.head),
  ];
  const rows = [head, head.map(() => '---')];
  for (const r of results) {
    const name = r.tool.kind === 'ours' ? `**${r.tool.label}**` : r.tool.label;
    const m = r.median?.[ph];
    if (m === undefined) {
      rows.push([name, `failed: ${r.failed ?? 'no run'}`, ...head.slice(2).map(() => '')]);
      continue;
    }
    rows.push([
      name,
      fx(m.wall),
      `${fx(m.min)}-${fx(m.max)}`,
      ...(ph === 'b2'
        ? [int(m.output), fx((m.wall / m.output) * 1e6, 0)]
        : [fx(bytes / 1e6 / m.wall, 1), int(m.output)]),
      fx(m.cpu),
      r.tool.how === 'kernel' ? '-' : fx(m.daemonCpu),
      fx(m.kernelCpu),
      fx(m.otherCpu),
      ...columns.map((c) => (r.tool.kind === 'ours' ? fx(timeRatio(r, get(results, c.id), ph)) : '-')),
    ]);
  }
  return md(rows);
}

/**
 * @param {MountResult[]} results
 */
function memoryTable(results) {
  const head = [
    'tool',
    'peak RSS MiB over B2 and B3 (VmHWM)',
    `peak RSS MiB during B3 (bar ≤ ${BAR.peakB3MiB})`,
    `idle RSS MiB after the mount (bar ≤ ${BAR.idleMiB})`,
    'processes',
    'mount s',
    'read-ahead KiB',
  ];
  const rows = [head, head.map(() => '---')];
  for (const r of results) {
    const name = r.tool.kind === 'ours' ? `**${r.tool.label}**` : r.tool.label;
    const m = r.median;
    if (m === undefined) {
      rows.push([name, `failed: ${r.failed ?? 'no run'}`, ...head.slice(2).map(() => '')]);
      continue;
    }
    const kernel = r.tool.how === 'kernel';
    const ours = r.tool.kind === 'ours';
    const p = b3Peak(r);
    rows.push([
      name,
      kernel ? 'n/a (in the kernel)' : mib(m.hwmKiB),
      kernel ? '-' : !p.alone ? 'not measured alone' : ours ? mibCell(p.kib, BAR.peakB3MiB) : mib(p.kib),
      kernel ? '-' : ours ? mibCell(m.idleRssKiB, BAR.idleMiB) : mib(m.idleRssKiB),
      kernel ? '-' : fx(m.processes, 0),
      fx(m.mountSeconds),
      kernel || !Number.isFinite(m.readAheadKb) ? '-' : fx(m.readAheadKb, 0),
    ]);
  }
  return md(rows);
}

/**
 * Whether every tool counted the same entries (B2) or tar bytes (B3), in every round.
 * @param {MountResult[]} results
 * @param {'b2' | 'b3'} ph
 * @param {string} dsName
 */
function consistency(results, ph, dsName) {
  const seen = results.flatMap((r) => {
    const outs = r.median?.[ph]?.outputs ?? [];
    return outs.length > 0 ? [{ label: r.tool.label, outs }] : [];
  });
  const all = new Set(seen.flatMap((s) => s.outs));
  if (all.size <= 1) return '';
  return (
    `**${dsName}: the tools do not agree on the ${ph === 'b2' ? 'number of entries' : 'tar size'}**: ` +
    seen.map((s) => `${s.label} ${[...new Set(s.outs)].map(int).join('/')}`).join(', ') +
    (ph === 'b3'
      ? ' (tar stores the data of hard-linked files once per inode number it sees: a larger archive ' +
        'means the daemon gave the links of one file different inode numbers, and tar read that data again).'
      : '.')
  );
}

/**
 * Sentences about where our daemon spends the time, from the numbers only.
 * @param {DataSet} ds
 * @param {MountResult[]} results
 * @param {Image | undefined} [img] our zstd image
 */
function reading(ds, results, img) {
  const z = get(results, 'nydusd-zstd');
  const l = get(results, 'nydusd-lz4_block');
  const sq = get(results, 'squashfuse');
  const ll = get(results, 'squashfuse_ll');
  const er = get(results, 'erofs');
  const out = [];
  const zb2 = z?.median?.b2;
  const zb3 = z?.median?.b3;
  if (zb2 !== undefined && zb2.output < 100) {
    const r = timeRatio(z, sq, 'b2');
    const e = timeRatio(z, er, 'b2');
    out.push(
      `B2: only ${int(zb2.output)} entries, so the walk (${fx(zb2.wall)} s) is mostly the start of find itself: ` +
        `ours/squashfuse ${fx(r)} (${tieNote(z, sq, 'b2', BAR.squashfuse) ?? verdict(r, BAR.squashfuse)}), ` +
        `ours/EROFS ${fx(e)} (${tieNote(z, er, 'b2', BAR.erofs) ?? verdict(e, BAR.erofs)}), ` +
        `differences of milliseconds (nydusd used ${fx(zb2.daemonCpu, 3)} CPU s).`,
    );
  } else if (zb2 !== undefined) {
    const sb2 = sq?.median?.b2;
    const r = timeRatio(z, sq, 'b2');
    const e = timeRatio(z, er, 'b2');
    let s =
      `B2: our walk takes ${fx(zb2.wall)} s for ${int(zb2.output)} entries (${fx((zb2.wall / zb2.output) * 1e6, 0)} µs each), ` +
      `ours/squashfuse **${fx(r)}** (${verdict(r, BAR.squashfuse)}), ours/EROFS **${fx(e)}** (${verdict(e, BAR.erofs)}). ` +
      `nydusd used ${fx(zb2.daemonCpu)} CPU s (${fx((zb2.daemonCpu / zb2.output) * 1e6, 0)} µs per entry, ` +
      `${fx(zb2.daemonCpu / zb2.wall, 2)} cores while find ran)`;
    if (sb2 !== undefined)
      s += `, squashfuse ${fx(sb2.daemonCpu)} CPU s (${fx((sb2.daemonCpu / sb2.output) * 1e6, 0)} µs per entry)`;
    s += `; find itself ${fx(zb2.cpu)} CPU s with us (its system time includes the FUSE round trips).`;
    s += floorText(results, 'b2', e);
    out.push(s);
  }
  if (zb3 !== undefined) {
    const bytes = ds.stats?.bytes ?? NaN;
    const sb3 = sq?.median?.b3;
    const r = timeRatio(z, sq, 'b3');
    const e = timeRatio(z, er, 'b3');
    let s =
      `B3: we read ${fx(bytes / 1e6 / zb3.wall, 1)} MB/s, ours/squashfuse **${fx(r)}** (${verdict(r, BAR.squashfuse)}), ` +
      `ours/EROFS **${fx(e)}** (${verdict(e, BAR.erofs)}); nydusd used ${fx(zb3.daemonCpu)} CPU s ` +
      `(${fx(zb3.daemonCpu / zb3.wall, 2)} cores, ${fx((zb3.daemonCpu / (bytes / 1e6)) * 1000, 1)} ms per MB)`;
    if (sb3 !== undefined)
      s += ` against squashfuse's ${fx(sb3.daemonCpu)} CPU s (${fx((sb3.daemonCpu / (bytes / 1e6)) * 1000, 1)} ms per MB)`;
    s += '.';
    const lb3 = l?.median?.b3;
    if (lb3 !== undefined)
      s += ` With lz4_block chunks: ${fx(lb3.wall)} s, ${fx(lb3.daemonCpu)} daemon CPU s (zstd ${fx(zb3.wall)} s).`;
    const llb3 = ll?.median?.b3;
    if (llb3 !== undefined && sb3 !== undefined)
      s += ` squashfuse_ll (the low-level libfuse API) takes ${fx(llb3.wall)} s against squashfuse's ${fx(sb3.wall)} s.`;
    s += floorText(results, 'b3', e);
    out.push(s);
  }
  const zm = z?.median;
  if (zm !== undefined && Number.isFinite(zm.hwmKiB)) {
    const p = b3Peak(z);
    out.push(
      (p.alone
        ? `B6: nydusd peaked at ${mib(p.kib)} MiB during B3 (bar ≤ ${BAR.peakB3MiB} MiB: **${verdict(p.kib / 1024, BAR.peakB3MiB)}**; ` +
          `${mib(zm.hwmKiB)} MiB over B2 and B3)`
        : `B6: nydusd peaked at ${mib(zm.hwmKiB)} MiB over B2 and B3 (this run did not measure the B3 peak alone; ` +
          `bar ≤ ${BAR.peakB3MiB} MiB during B3)`) +
        `, idle after the mount ${mib(zm.idleRssKiB)} MiB (bar ≤ ${BAR.idleMiB} MiB: **${verdict(zm.idleRssKiB / 1024, BAR.idleMiB)}**` +
        `${withoutBootstrap(zm.idleRssKiB, BAR.idleMiB, img).replace(' (', '; ').replace(/\)$/, '')}); ` +
        `squashfuse peaked at ${mib(sq?.median?.hwmKiB ?? NaN)} MiB (${mib(sq?.median?.idleRssKiB ?? NaN)} MiB idle). ` +
        `Mounting took ${fx(zm.mountSeconds)} s (squashfuse ${fx(sq?.median?.mountSeconds ?? NaN)} s).`,
    );
  }
  for (const ph of /** @type {const} */ (['b2', 'b3'])) {
    const c = consistency(results, ph, ds.name);
    if (c !== '') out.push(c);
  }
  return `- **${ds.name}**: ${out.length > 0 ? out.join(' ') : 'no result for our daemon.'}`;
}

/**
 * The data set sizes of a run, as the report gives them.
 * @param {{ sets: string[], bigMiB: number, bigCount?: number, smallFiles: number }} c
 */
export function sizesText(c) {
  return (
    `big-files ${c.bigCount ?? 4} x ${c.bigMiB} MiB, many-small ${int(c.smallFiles)} files` +
    `${c.sets.includes('rootfs-large') ? ', rootfs and rootfs-large' : ', rootfs'}`
  );
}

/**
 * @param {MountInput} o
 * @param {{ requests?: string, memory?: string, memoryInput?: any }} [sub] the request-cost and
 *   daemon-memory sections (rendered, with their dates), placed under B3 and B6, and the memory
 *   part's results for B6's per-image bar
 * @returns {string[]}
 */
export function renderMounts(o, sub = {}) {
  const m = o.machine;
  const v = m.mountVersions;
  const shown = ['b2', 'b3', 'b6'].filter((b) => o.config.only.includes(b)).map((b) => b.toUpperCase());
  const L = partHeading(`${shown.join(', ')}: mounted images`, o);
  L.push(
    `- Command: \`${o.command}\` (\`node bench/run.mjs\`; \`NYDUS_BENCH_ONLY=b2,b3,b6 npm run bench\` runs ` +
      `these alone); work directory \`${o.config.work}\`, measurements saved in \`results-mount.json\` there.`,
    '- Images of the same data set directories as B1: ours `nydus-image create --compressor zstd` (and ' +
      '`lz4_block`) `--fs-version 6 -B bootstrap -D blobs SRC`, from the private build of src/; ' +
      "`mksquashfs SRC IMG -comp zstd -noappend -quiet`; `mkfs.erofs -zlz4hc IMG SRC`. The peers' " +
      'images are cached between runs (keyed by the data set and the tool version), ours are made again.',
    '- Mounted by: ours `nydusd --config nydusd.json --bootstrap bootstrap --mountpoint MNT` (the private ' +
      'build, default 4 FUSE threads) with a v1 config: `localfs` backend over the blob directory, cache ' +
      '`dummycache` (none: every read decompresses from the blob file), `digest_validate: false`; ' +
      '`squashfuse -f IMG MNT` (the peer of the bar) and `squashfuse_ll -f IMG MNT` (its low-level-API ' +
      'variant, for context only), both in the foreground so the pid is the daemon; kernel EROFS by ' +
      '`mount -t erofs -o loop,ro IMG MNT`.',
    "- Kernel read-ahead: nydusd sets its own mount's to 1 MiB (the bdi's `read_ahead_kb`; the kernel's " +
      "default for FUSE is 128 KiB), so a sequential reader's reads grow to whole 1 MiB chunks while the " +
      "daemon reads the file's next chunk ahead itself. The peers " +
      'run at their defaults; the extra row "squashfuse, zstd, read-ahead 1 MiB" is squashfuse with the ' +
      'harness setting the same on its mount, to show what the setting alone is worth. The memory tables ' +
      "give each mount's read-ahead as read back from sysfs.",
    `- ${plural(o.config.rounds, 'round')} per data set` +
      (o.fewRounds !== undefined && o.fewRounds < o.config.rounds
        ? ` (${plural(o.fewRounds, 'round')} for the rows no bar is judged on: ${o.tools
            .filter((t) => t.few === true)
            .map((t) => t.label)
            .join('; ')}${
            o.measured.some(({ results }) => results.length < o.tools.length)
              ? ', which in the full mode run only on ' +
                o.measured
                  .filter(({ results }) => results.length === o.tools.length)
                  .map(({ ds }) => ds.name)
                  .join(', ')
              : ''
          })`
        : '') +
      '; a round mounts every image once, each round in its own shuffled order (seeded by the round, ' +
      'the same in every run of the bench, as in B1). Each mount is new (a new daemon process, so its own caches start empty); once ' +
      "mounted, the daemon's RSS is read when it has settled (sampled every 250 ms until four samples " +
      'in a row are within 128 KiB, at most 5 s: the **idle RSS after the mount**), then: ' +
      (o.phases.b2
        ? `**B2** \`sync; echo 3 > /proc/sys/vm/drop_caches\` and \`find MNT -printf '%s %m %u %g\\n' | wc -l\`; `
        : '') +
      (o.phases.b3
        ? `**B3** the same drop, then \`tar -cf - . | wc -c\` in MNT (tar reads every file: its output is a pipe); `
        : '') +
      "**B6** the daemon's VmHWM from `/proc/PID/status` (summed over its processes: each daemon is one " +
      'process, threads included) after B2, then reset (`echo 5 > /proc/PID/clear_refs`) before B3 and ' +
      'read again after it (the **peak during B3**), then the unmount (SIGTERM to the daemon, umount for EROFS). B3 runs on ' +
      'the mount B2 walked, with the kernel caches dropped in between: what the daemon itself keeps from ' +
      'B2 stays, as in a container that lists and then reads.',
    '- Wall time is measured around the command (monotonic clock). CPU columns: the command itself (GNU ' +
      "time: find, or tar and wc; its system time includes the kernel's FUSE and EROFS work done in its " +
      "context), the daemon (`/proc/PID/stat`, all threads), kernel threads (the machine's busy time less " +
      'all user-space processes: loop device, EROFS decompression workers, writeback), others (every ' +
      'other user-space process).',
    '- The machine is shared: before every command the harness waits (at most 1 min, and within a budget ' +
      'for the whole run) until the machine ' +
      'has used under 10% of a core for half a second, and a mount session during which other user-space ' +
      'processes used more than max(0.3 s, 20% of the wall time) of CPU is repeated, at most twice (and ' +
      'within a budget for the whole run) ' +
      `(${o.measured.map(({ ds, quiet }) => `${ds.name}: ${plural(quiet.repeated, 'session')} repeated, ${quiet.keptDisturbed} kept though disturbed, ${fx(quiet.waited, 0)} s waited`).join('; ')}).`,
    o.cachesDropped
      ? '- Every drop of the caches succeeded.'
      : '- **The caches could not be dropped here (not permitted): runs were not cold.**',
    `- Ratios are of median times, ours/peer: **at or below 1.0 we are at least as fast**. The bar: ` +
      `B2 and B3 ours/squashfuse ≤ ${fx(BAR.squashfuse, 1)} and ours/kernel EROFS ≤ ${fx(BAR.erofs, 1)}; ` +
      `B6 (issue #12) our daemon's peak RSS during B3 ≤ ${BAR.peakB3MiB} MiB, its idle RSS after the mount ` +
      `≤ ${BAR.idleMiB} MiB, and at most ${BAR.perImageMiB} MiB more per extra image mounted in the same ` +
      "daemon through the API (measured by the daemon-memory section below); squashfuse's RSS is shown " +
      'for comparison. The bar is judged on the zstd image (the default); lz4_block is an extra row.',
    `- Run time: images ${fx(o.imageSeconds / 60, 1)} min, measurements ${fx(o.benchSeconds / 60, 1)} min, ` +
      `${fx(o.totalSeconds / 60, 1)} min in all (data set sizes as in B1: ${sizesText(o.config)}).`,
    '',
  );

  L.push(
    ...machineSection(m, [
      ['FUSE', v.fuse],
      ['squashfuse, libfuse3', `Debian ${v.squashfuse}, ${v.libfuse3}`],
      ['squashfs-tools, erofs-utils', `${v.squashfsTools}, ${v.erofsUtils}`],
      ['util-linux, tar, findutils', `${v.utilLinux}, ${v.tar}, ${v.findutils}`],
    ]),
  );

  L.push('### Images', '');
  const imgRows = [['data set', 'image', 'bytes', 'of the source', 'made in s']];
  imgRows.push(imgRows[0]?.map(() => '---') ?? []);
  for (const { ds, images } of o.measured) {
    for (const img of Object.values(images)) {
      imgRows.push([
        ds.name,
        img.label,
        img.failed !== undefined ? `failed: ${img.failed}` : int(img.bytes),
        img.failed !== undefined ? '' : pct(img.bytes / (ds.stats?.bytes ?? NaN)),
        img.cached ? 'cached' : fx(img.seconds, 1),
      ]);
    }
  }
  L.push(md(imgRows), '');

  L.push('### The bar', '');
  const barHead = [
    'data set',
    ...(o.phases.b2
      ? ['B2 ours/squashfuse', 'B2 ours/EROFS', 'B2 fastest C FUSE daemon/EROFS (the floor)']
      : []),
    ...(o.phases.b3
      ? ['B3 ours/squashfuse', 'B3 ours/EROFS', 'B3 fastest C FUSE daemon/EROFS (the floor)']
      : []),
    ...(o.phases.b6
      ? [`B6 peak MiB during B3 (≤ ${BAR.peakB3MiB})`, `B6 idle MiB after the mount (≤ ${BAR.idleMiB})`]
      : []),
  ];
  const barRows = [barHead, barHead.map(() => '---')];
  for (const { ds, results, images } of o.measured) {
    const z = get(results, 'nydusd-zstd');
    const tieCell = (
      /** @type {MountResult | undefined} */ a,
      /** @type {MountResult | undefined} */ b,
      /** @type {'b2' | 'b3'} */ ph,
      /** @type {number} */ bar,
    ) => `${fx(timeRatio(a, b, ph))} (${tieNote(a, b, ph, bar) ?? verdict(timeRatio(a, b, ph), bar)})`;
    const row = [ds.name];
    for (const ph of /** @type {const} */ (['b2', 'b3'])) {
      if (!o.phases[ph]) continue;
      row.push(
        tieCell(z, get(results, 'squashfuse'), ph, BAR.squashfuse),
        tieCell(z, get(results, 'erofs'), ph, BAR.erofs),
      );
      const f = fuseFloor(results, ph);
      row.push(Number.isFinite(f.ratio) ? `${fx(f.ratio)} (${f.label})` : 'n/a');
    }
    if (o.phases.b6) {
      const p = b3Peak(z);
      row.push(
        p.alone
          ? mibCell(p.kib, BAR.peakB3MiB) + withoutBootstrap(p.kib, BAR.peakB3MiB, images?.['nydus-zstd'])
          : `${mib(p.kib)} over B2 and B3 (not measured alone)`,
        mibCell(z?.median?.idleRssKiB ?? NaN, BAR.idleMiB) +
          withoutBootstrap(z?.median?.idleRssKiB ?? NaN, BAR.idleMiB, images?.['nydus-zstd']),
      );
    }
    barRows.push(row);
  }
  L.push(md(barRows), '');
  if (o.phases.b6) {
    const per = perImageKiB(sub.memoryInput);
    L.push(
      Number.isFinite(per)
        ? `B6 per extra image mounted in one daemon through the API: ${mib(per)} MiB (bar ≤ ${BAR.perImageMiB} MiB: ` +
            `**${verdict(per / 1024, BAR.perImageMiB)}**; from the daemon-memory section below, measured ${sub.memoryInput?.date ?? ''}).`
        : `B6 per extra image mounted in one daemon through the API (bar ≤ ${BAR.perImageMiB} MiB): not measured ` +
            '(no saved result of the daemon-memory part).',
      '',
    );
  }

  for (const ph of /** @type {const} */ (['b2', 'b3'])) {
    if (!o.phases[ph] || !o.config.only.includes(ph)) continue;
    L.push(ph === 'b2' ? '### B2: metadata walk' : '### B3: cold read of every file', '');
    for (const { ds, results } of o.measured) L.push(`#### ${ds.name}`, '', phaseTable(ds, results, ph), '');
  }
  if (sub.requests !== undefined) L.push(sub.requests, '');
  if (o.phases.b6) {
    L.push('### B6: daemon memory (through B2 and B3)', '');
    for (const { ds, results } of o.measured) L.push(`#### ${ds.name}`, '', memoryTable(results), '');
  }
  if (sub.memory !== undefined) L.push(sub.memory, '');

  L.push('### Reading', '');
  for (const { ds, results, images } of o.measured) L.push(reading(ds, results, images?.['nydus-zstd']));
  const failed = o.measured.flatMap(({ ds, results }) =>
    results.filter((r) => r.failed !== undefined).map((r) => `${ds.name}: ${r.tool.label}: ${r.failed}`),
  );
  if (failed.length > 0) L.push('', `Failures: ${failed.join('; ')}.`);
  L.push('');
  return L;
}
