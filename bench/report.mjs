// BENCHMARKS.md from the benchmark runs (B1's, B2/B3/B6's from report-mount.mjs, B4/B5/B7's from
// report-registry.mjs, B8's from report-containerd.mjs). Every
// number and every sentence of the "Reading" is derived from the measurements of those runs, so
// regenerating the file never leaves stale prose.
import { fx, int, md, partHeading, pct, plural } from './report-common.mjs';
import { renderContainerd } from './report-containerd.mjs';
import { renderRemote } from './report-remote.mjs';
import { renderMounts } from './report-mount.mjs';
import { renderRegistry } from './report-registry.mjs';

/** @param {number} bytes @param {number} seconds */
const mbps = (bytes, seconds) => bytes / 1e6 / seconds;

/**
 * @typedef {import('./run.mjs').Tool} Tool
 * @typedef {import('./datasets.mjs').DataSet} DataSet
 * @typedef {import('./run.mjs').ToolResult} ToolResult
 */

/**
 * @param {{ ds: DataSet, quiet: { waited: number, repeated: number, keptDisturbed: number } }[]} measured
 */
function quietText(measured) {
  return measured
    .map(
      ({ ds, quiet }) =>
        `${ds.name}: ${plural(quiet.repeated, 'run')} repeated, ${quiet.keptDisturbed} kept though disturbed, ` +
        `${fx(quiet.waited, 0)} s waited`,
    )
    .join('; ');
}

/** Peers the ratio columns are taken against, in column order. */
const RATIO_PEERS = [
  { id: 'mksquashfs-zstd', head: 'ours/mksquashfs zstd (bar ≥ 1.0)' },
  { id: 'mksquashfs-zstd-l3', head: 'ours/mksquashfs zstd level 3' },
  { id: 'mkfs.erofs-lz4hc', head: 'ours/mkfs.erofs lz4hc' },
];

/**
 * Throughput ratio ours/peer on the same source: peer seconds over our seconds.
 * @param {ToolResult | undefined} ours
 * @param {ToolResult | undefined} peer
 */
function ratio(ours, peer) {
  if (ours?.median === undefined || peer?.median === undefined) return NaN;
  return peer.median.wall / ours.median.wall;
}

/**
 * @param {DataSet} ds
 * @param {ToolResult[]} results
 */
function table(ds, results) {
  const bytes = ds.stats?.bytes ?? NaN;
  const byId = new Map(results.map((r) => [r.tool.id, r]));
  const head = [
    'tool',
    'median s',
    'min-max s',
    'MB/s',
    'CPU s',
    'others CPU s',
    'peak RSS MiB',
    'output bytes',
    'output/source',
    ...RATIO_PEERS.map((p) => p.head),
  ];
  const rows = [head, head.map(() => '---')];
  for (const r of results) {
    const name = r.tool.kind === 'ours' ? `**${r.tool.label}**` : r.tool.label;
    if (r.median === undefined) {
      rows.push([name, `failed: ${r.failed ?? 'no run'}`, ...head.slice(2).map(() => '')]);
      continue;
    }
    const m = r.median;
    const isBuild = r.tool.kind !== 'reference';
    rows.push([
      name,
      fx(m.wall),
      `${fx(m.min)}-${fx(m.max)}`,
      fx(mbps(bytes, m.wall), 1),
      fx(m.cpu),
      fx(m.otherCpu),
      isBuild ? fx(m.rssKiB / 1024, 0) : '-',
      isBuild ? int(m.outputBytes) : '-',
      isBuild ? pct(m.outputBytes / bytes) : '-',
      ...RATIO_PEERS.map((p) => (r.tool.kind === 'ours' ? fx(ratio(r, byId.get(p.id))) : '-')),
    ]);
  }
  return md(rows);
}

/**
 * Sentences about one data set, from its numbers only.
 * @param {DataSet} ds
 * @param {ToolResult[]} results
 * @param {{ fixedSeconds: number }} probe
 * @param {string} nproc
 */
function reading(ds, results, probe, nproc) {
  const get = (/** @type {string} */ id) => results.find((r) => r.tool.id === id);
  const z = get('nydus-zstd');
  const l = get('nydus-lz4_block');
  const n = get('nydus-none');
  const sq = get('mksquashfs-zstd');
  const sq3 = get('mksquashfs-zstd-l3');
  const er = get('mkfs.erofs-lz4hc');
  const rd = get('read');
  const bytes = ds.stats?.bytes ?? NaN;
  const files = ds.stats?.files ?? 0;
  const out = [];
  if (z?.median === undefined || sq?.median === undefined) {
    return `- **${ds.name}**: no comparison: ${z?.failed ?? sq?.failed ?? 'a tool did not run'}.`;
  }
  const r = ratio(z, sq);
  out.push(
    `**${ds.name}**: \`nydus-image create\` (zstd) builds at ${fx(mbps(bytes, z.median.wall), 1)} MB/s, ` +
      `\`mksquashfs -comp zstd\` at ${fx(mbps(bytes, sq.median.wall), 1)} MB/s: ratio **${fx(r)}**, ` +
      `the bar (≥ 1.0) is **${r >= 1 ? 'met' : 'missed'}**.`,
  );
  if (sq3?.median !== undefined) {
    const r3 = ratio(z, sq3);
    out.push(
      `At the same zstd level as ours (3), mksquashfs takes ${fx(sq3.median.wall)} s: ratio ${fx(r3)} ` +
        `(${r3 >= 1 ? 'we are faster' : 'we are slower'}); its default level costs it ` +
        `${fx(sq.median.cpu)} CPU s instead of ${fx(sq3.median.cpu)} and shrinks its output to ` +
        `${pct(sq.median.outputBytes / bytes)} of the source (${pct(sq3.median.outputBytes / bytes)} at level 3, ` +
        `ours ${pct(z.median.outputBytes / bytes)}).`,
    );
  }
  if (er?.median !== undefined) {
    out.push(
      `Against \`mkfs.erofs -zlz4hc\` (${fx(er.median.wall)} s, ${fx(er.median.cpu)} CPU s): ` +
        `zstd ${fx(ratio(z, er))}, lz4_block ${fx(ratio(l, er))}.`,
    );
  }
  if (n?.median !== undefined) {
    const share = n.median.wall / z.median.wall;
    if (share < 1) {
      out.push(
        `Where our time goes: \`--compressor none\` takes ${fx(n.median.wall)} s, ${pct(share)} of the zstd ` +
          `build: walking, reading, hashing (blake3 chunk ids, sha256 blob id) and writing cost that ` +
          `much; compression adds the remaining ${pct(1 - share)}.`,
      );
    } else {
      out.push(
        `Where our time goes: \`--compressor none\` (${fx(n.median.wall)} s) is no faster than zstd ` +
          `(${fx(z.median.wall)} s), so compression is not what limits this build; none writes ` +
          `${int(n.median.outputBytes)} bytes instead of ${int(z.median.outputBytes)}.`,
      );
    }
    if (rd?.median !== undefined) {
      let s =
        `A cold single-threaded read of the same files (\`tar | wc -c\`) takes ${fx(rd.median.wall)} s; ` +
        `the none build takes ${fx(n.median.wall / rd.median.wall, 1)}x that`;
      if (files >= 1000) {
        const perFile = ((n.median.wall - rd.median.wall - probe.fixedSeconds) / files) * 1e6;
        s +=
          `: beyond the read and the fixed start-up cost it spends ` +
          `${fx(n.median.wall - rd.median.wall - probe.fixedSeconds)} s, ${fx(perFile, 0)} µs per file`;
      }
      out.push(`${s}.`);
    }
    out.push(
      `The zstd build kept ${fx(z.median.cpu / z.median.wall, 1)} of ${nproc} cores busy ` +
        `(${fx(z.median.cpu)} CPU s; mksquashfs ${fx(sq.median.cpu / sq.median.wall, 1)}, ` +
        `none ${fx(n.median.cpu / n.median.wall, 1)}); ` +
        `${fx(probe.fixedSeconds)} s of every build is the fixed start-up cost. ` +
        `Peak RSS ${fx(z.median.rssKiB / 1024, 0)} MiB against mksquashfs's ${fx(sq.median.rssKiB / 1024, 0)} MiB.`,
    );
  }
  return `- ${out.join(' ')}`;
}

/**
 * @typedef {{
 *   command: string,
 *   config: { work: string, rounds: number, sets: string[], bigMiB: number, smallFiles: number },
 *   date: string,
 *   machine: ReturnType<typeof import('./run.mjs').machine>,
 *   sets: DataSet[],
 *   measured: { ds: DataSet, results: ToolResult[], quiet: { waited: number, repeated: number, keptDisturbed: number } }[],
 *   probe: { encoders: Record<string, string>, fixedSeconds: number },
 *   cachesDropped: boolean,
 *   prepSeconds: number,
 *   benchSeconds: number,
 *   totalSeconds: number,
 *   tools: Tool[],
 * }} B1Input
 */

/**
 * BENCHMARKS.md: B1 from its run, B2/B3/B6, B4/B5/B7 and B8 from theirs (any may be missing; a
 * missing part may be given as the text it had in the existing report, `kept`).
 * @param {B1Input | undefined} b1
 * @param {import('./report-mount.mjs').MountInput} [mounts]
 * @param {import('./report-registry.mjs').RegistryInput} [registry]
 * @param {{ b1?: string, mounts?: string, registry?: string, containerd?: string, remote?: string }} [kept]
 * @param {import('./report-containerd.mjs').ContainerdInput} [containerd]
 * @param {import('./report-remote.mjs').RemoteInput} [remote]
 */
export function renderReport(b1, mounts, registry, kept = {}, containerd = undefined, remote = undefined) {
  const L = [];
  L.push('# Benchmarks', '');
  const keptDate = (/** @type {string | undefined} */ t) =>
    t === undefined ? undefined : /Measured on (.*?) \(/.exec(t)?.[1];
  const dates = {
    b1: b1?.date ?? keptDate(kept.b1),
    mounts: mounts?.date ?? keptDate(kept.mounts),
    registry: registry?.date ?? keptDate(kept.registry),
    containerd: containerd?.date ?? keptDate(kept.containerd),
    remote: remote?.date ?? keptDate(kept.remote),
  };
  const when = [
    dates.b1 !== undefined ? `B1 on ${dates.b1}` : undefined,
    dates.mounts !== undefined ? `B2, B3 and B6 on ${dates.mounts}` : undefined,
    dates.registry !== undefined ? `B4, B5 and B7 on ${dates.registry}` : undefined,
    dates.containerd !== undefined ? `B8 on ${dates.containerd}` : undefined,
    dates.remote !== undefined ? `B9 on ${dates.remote}` : undefined,
  ].filter((x) => x !== undefined);
  L.push(
    `Generated by \`${b1?.command ?? mounts?.command ?? registry?.command ?? containerd?.command ?? 'npm run bench'}\` (\`bench/run.mjs\`)` +
      `${when.length > 0 ? `: ${when.join(', ')}` : ''}. Do not edit by hand: run the command ` +
      'again (`NYDUS_BENCH_ONLY=b1`, `=b2,b3,b6`, `=b4,b5,b7`, `=b8` or `=b9` reruns one part and keeps the others). The machines ' +
      'here are small and shared, so only the **ratios** mean anything: every ' +
      'tool ran on the same data, in the same run, alternating (see `../shared/docs/benchmarks.md` ' +
      'for what is measured and the bar).',
    '',
  );
  if (b1 !== undefined) L.push(...renderB1(b1));
  else if (kept.b1 !== undefined) L.push(kept.b1, '');
  else L.push('## B1: build throughput', '', 'Not measured yet (no saved B1 results).', '');
  if (mounts !== undefined) L.push(...renderMounts(mounts));
  else if (kept.mounts !== undefined) L.push(kept.mounts, '');
  if (registry !== undefined) L.push(...renderRegistry(registry));
  else if (kept.registry !== undefined) L.push(kept.registry, '');
  if (containerd !== undefined) L.push(...renderContainerd(containerd));
  else if (kept.containerd !== undefined) L.push(kept.containerd, '');
  if (remote !== undefined) L.push(...renderRemote(remote));
  else if (kept.remote !== undefined) L.push(kept.remote, '');
  const measured = [
    ...(mounts?.config.only ?? []),
    ...(kept.mounts !== undefined ? ['b2', 'b3', 'b6'] : []),
    ...(registry !== undefined || kept.registry !== undefined ? ['b4', 'b5', 'b7'] : []),
    ...(containerd !== undefined || kept.containerd !== undefined ? ['b8'] : []),
    ...(remote !== undefined || kept.remote !== undefined ? ['b9'] : []),
  ];

  const rows = [
    ['B2', 'metadata walk of a mounted image vs squashfuse and kernel EROFS', 'nydusd (FUSE daemon)'],
    ['B3', 'cold read of every file vs squashfuse and kernel EROFS', 'nydusd, localfs backend'],
    [
      'B4',
      'lazy start over a throttled link vs full OCI pull',
      'nydusd with the registry backend, the snapshotter',
    ],
    ['B5', 'bytes fetched for B4 vs the bytes the command reads', 'the registry backend'],
    ['B6', 'daemon memory vs squashfuse', 'nydusd'],
    ['B7', '`nydusify convert` of the rootfs image vs mksquashfs', 'nydusify, the registry backend'],
    [
      'B8',
      'container start through containerd vs `ctr image pull` + `ctr run`',
      'containerd-nydus-grpc (the snapshotter)',
    ],
    [
      'B9',
      'cold read through each remote backend vs the localfs backend',
      'the remote backends and the proxy',
    ],
  ].filter(([id]) => !measured.includes(String(id).toLowerCase()));
  if (rows.length === 0) return L.join('\n');
  L.push(`## ${rows.map((r) => r[0]).join(', ')}: not measured yet`, '');
  L.push(
    '| # | what | arrives with |',
    '| --- | --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
  );
  return L.join('\n');
}

/**
 * The B1 part of the report.
 * @param {B1Input} o
 * @returns {string[]}
 */
function renderB1(o) {
  const m = o.machine;
  const L = partHeading('B1: build throughput', o);
  L.push(
    `- Command: \`${o.command}\` (\`node bench/run.mjs\`); work directory ` +
      `\`${o.config.work}\` (\`NYDUS_BENCH_DIR\`), where the data sets are cached between runs.`,
    `- ${o.config.rounds} round${o.config.rounds === 1 ? '' : 's'} per data set. A round runs every tool once, in a rotating order (round ` +
      '_r_ starts with the _r_-th tool), so no tool always follows the same one. Tables give the median ' +
      'and the range of the rounds.',
    o.cachesDropped
      ? '- Before every run: `sync; echo 3 > /proc/sys/vm/drop_caches` (cold page cache, dentries and ' +
          'inodes), and the output directory is emptied.'
      : '- **The page cache could not be dropped here (not permitted): every run after the first read ' +
          'its source from a warm cache.**',
    '- Wall time is measured by the harness around the process (monotonic clock); CPU time (user + ' +
      'system), and peak RSS come from GNU time (`/usr/bin/time -f "%e %M %U %S"`). Output bytes are ' +
      'all the files a tool wrote (ours: bootstrap + data blob).',
    '- "others CPU s" is the CPU time the rest of the machine used while the tool ran (from ' +
      "`/proc/stat`, minus the tool's own): other processes and kernel threads such as writeback. " +
      'This machine is shared with other work: before every run the harness waits (at most 1 min) ' +
      'until the machine has used under 10% of a core for half a second, and a run during which ' +
      'the rest of the machine used more than max(0.3 s, 20% of its wall time) is discarded and ' +
      `run again, at most twice (${quietText(o.measured)}).`,
    '- MB/s = bytes of the source regular files / median seconds (MB = 10^6 bytes). A ratio ours/peer ' +
      "is the peer's median seconds over ours on the same data: above 1.0 we are faster.",
    '- Every tool uses the cores as it chooses; "CPU s" over "median s" shows how many it kept busy. ' +
      'Ours: `nydus-image create --compressor C --fs-version 6 -B OUT/bootstrap -b OUT/blob SRC` ' +
      '(blake3 chunk digests, 1 MiB chunks, the default bootstrap validation included), compiled ' +
      "from src/ into the work directory at the start with the project's tsc, so that builds of " +
      'dist/ during the run cannot change what is measured.',
    '- Peers: `mksquashfs SRC OUT -comp zstd -noappend -quiet` is the peer of the bar (at its default ' +
      'zstd level, 15 per `mksquashfs -help`); the same at `-Xcompression-level 3`, the level our zstd ' +
      'uses, is an extra level-matched comparison; `mkfs.erofs -zlz4hc OUT SRC`. ' +
      '`tar -cf - -C SRC . | wc -c` is not a peer: it is the cost of reading the files once.',
    `- Fixed cost of one \`nydus-image create\` (empty source directory, median of ${o.config.rounds}): ` +
      `${fx(o.probe.fixedSeconds)} s (Node.js start-up, module loading, worker threads, native libraries).`,
    `- Run time: ${o.prepSeconds > 0 ? `data sets made in ${fx(o.prepSeconds, 0)} s, ` : 'data sets cached from an earlier run, '}measurements ` +
      `${fx(o.benchSeconds / 60, 1)} min (of which ${fx(o.measured.reduce((t, x) => t + x.quiet.waited, 0) / 60, 1)} min ` +
      `waiting for a quiet machine, plus the repeated runs), ${fx(o.totalSeconds / 60, 1)} min in all.`,
    `- Sizes, tuned to keep the whole run under 25 minutes on 2 cores: big-files has 4 files of ` +
      `${o.config.bigMiB} MiB (\`NYDUS_BENCH_BIG_MIB\`; \`mkfs.erofs -zlz4hc\` dominates that data ` +
      `set's time), many-small ${int(o.config.smallFiles)} files (\`NYDUS_BENCH_SMALL\`). ` +
      '`../shared/docs/benchmarks.md` asks for more (256 MiB files, 50k small files, a second rootfs ' +
      'of 500 MB+ with extra packages); those are not measured yet.',
    '',
  );

  L.push('### Machine', '');
  const mach = [
    [
      'CPU',
      `${m.cpu}${m.cpuMHz ? ` (${m.cpuMHz} MHz)` : ''}; flags: ${m.cpuHints.join(', ') || 'none of sha_ni, avx2, avx512f'}`,
    ],
    ['cores (nproc)', m.nproc],
    ['memory', `${fx(m.memGiB, 1)} GiB`],
    ['kernel', m.kernel],
    ['work directory file system', m.disk],
    ['Node.js', m.node],
    ['nydus-ts', `commit ${m.commit}`],
    ['nydus-image zstd encoder', o.probe.encoders['zstd'] ?? 'unknown'],
    ['nydus-image lz4_block encoder', o.probe.encoders['lz4_block'] ?? 'unknown'],
    [
      'mksquashfs',
      `${m.versions.mksquashfs} (Debian squashfs-tools ${m.versions.squashfsTools}; links ${m.versions.mksquashfsLinks})`,
    ],
    ['mkfs.erofs', `Debian erofs-utils ${m.versions.erofsUtils} (links ${m.versions.erofsLinks})`],
    ['libzstd1, liblz4-1', `${m.versions.libzstd1}, ${m.versions.liblz4}`],
    ['debootstrap, GNU time', `${m.versions.debootstrap}, ${m.versions.gnuTime}`],
  ];
  L.push('| what | value |', '| --- | --- |', ...mach.map(([k, v]) => `| ${k} | ${v} |`), '');

  L.push('### Data sets', '');
  L.push(
    '| data set | regular files | directories | symlinks | other | bytes of files | deepest level | made by |',
  );
  L.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const ds of o.sets) {
    if (ds.skipped !== undefined || ds.stats === undefined) {
      L.push(
        `| ${ds.name} | skipped | | | | | | ${ds.description} **Skipped: ${ds.skipped ?? 'unknown'}** |`,
      );
      continue;
    }
    const s = ds.stats;
    L.push(
      `| ${ds.name} | ${int(s.files)} | ${int(s.dirs)} | ${int(s.symlinks)} | ${int(s.other)} | ${int(s.bytes)} | ${s.depth} | ${ds.description} |`,
    );
  }
  L.push('');
  const seen = o.measured
    .map(({ ds, results }) => {
      const st = results.find((r) => r.tool.id === 'nydus-zstd')?.stats;
      return st
        ? `${ds.name}: ${int(Number(st[1]))} files, ${int(Number(st[2]))} bytes, ${int(Number(st[3]))} chunks, ${int(Number(st[4]))} deduplicated`
        : undefined;
    })
    .filter((x) => x !== undefined);
  if (seen.length > 0) L.push(`What \`nydus-image create\` itself counted: ${seen.join('; ')}.`, '');

  L.push('### Results', '');
  for (const { ds, results } of o.measured) {
    L.push(`#### ${ds.name}`, '', table(ds, results), '');
  }
  for (const ds of o.sets.filter((d) => d.skipped !== undefined)) {
    L.push(`#### ${ds.name}`, '', `Not measured: ${ds.skipped}`, '');
  }

  L.push('### Reading', '');
  const met = o.measured.filter(({ results }) => {
    const z = results.find((r) => r.tool.id === 'nydus-zstd');
    return (
      ratio(
        z,
        results.find((r) => r.tool.id === 'mksquashfs-zstd'),
      ) >= 1
    );
  });
  const matched = o.measured.map(({ ds, results }) => {
    const z = results.find((r) => r.tool.id === 'nydus-zstd');
    return `${ds.name} ${fx(
      ratio(
        z,
        results.find((r) => r.tool.id === 'mksquashfs-zstd-l3'),
      ),
    )}`;
  });
  L.push(
    `The bar (\`nydus-image create\` with zstd at least as fast as \`mksquashfs -comp zstd\`) is met on ` +
      `${met.length} of ${o.measured.length} data sets${met.length > 0 ? ` (${met.map((x) => x.ds.name).join(', ')})` : ''}. ` +
      "That bar compares against mksquashfs's default zstd level 15, which spends far more CPU per byte " +
      'than our level 3; level-matched (both at zstd level 3) the throughput ratios are ' +
      `${matched.join(', ')}.`,
    '',
  );
  const shares = o.measured.flatMap(({ results }) => {
    const z = results.find((r) => r.tool.id === 'nydus-zstd')?.median;
    const n = results.find((r) => r.tool.id === 'nydus-none')?.median;
    return z && n ? [{ share: n.wall / z.wall, cores: z.cpu / z.wall }] : [];
  });
  if (shares.length > 0) {
    const minShare = Math.min(...shares.map((x) => x.share));
    const maxCores = Math.max(...shares.map((x) => x.cores));
    L.push(
      `Across the data sets \`--compressor none\` takes at least ${pct(minShare)} of the zstd build's time, ` +
        `and the zstd build keeps at most ${fx(maxCores, 1)} of ${m.nproc} cores busy` +
        (minShare >= 0.8
          ? ': compression is not what limits our builds; the work around it (walk, file reads, ' +
            'hashing, handing chunks to the worker threads, writing) does, and it does not use both cores.'
          : '.'),
      '',
    );
  }
  for (const { ds, results } of o.measured) L.push(reading(ds, results, o.probe, m.nproc));
  L.push('');
  return L;
}
