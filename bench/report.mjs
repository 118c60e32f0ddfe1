// BENCHMARKS.md from the benchmark runs (B1's, B2/B3/B6's from report-mount.mjs, B4/B5/B7's from
// report-registry.mjs, B8's from report-containerd.mjs). Every
// number and every sentence of the "Reading" is derived from the measurements of those runs, so
// regenerating the file never leaves stale prose.
import { cpuText, fx, int, md, modeOf, modeText, partHeading, pct, plural } from './report-common.mjs';
import { renderContainerd } from './report-containerd.mjs';
import { renderRemote } from './report-remote.mjs';
import { renderMounts, sizesText } from './report-mount.mjs';

/** As run.mjs marks the rows the full mode leaves out (not imported: run.mjs imports this file). */
const FULL_MODE_LEFT_OUT = 'left out in the full mode';
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

/**
 * Peers the ratio columns are taken against, in column order, and which of our rows each is
 * for: the builds from a directory, or from a tar file.
 */
/** @type {RatioPeer[]} */
const RATIO_PEERS = [
  { id: 'mksquashfs-zstd-l3', head: 'ours/mksquashfs zstd level 3 (bar ≥ 1.0)', source: 'dir' },
  { id: 'mksquashfs-zstd', head: 'ours/mksquashfs zstd default level (bar ≥ 1.0)', source: 'dir' },
  { id: 'mkfs.erofs-lz4hc', head: 'ours/mkfs.erofs lz4hc', source: 'dir' },
  // Only for the zstd build: the floor does what it does, less RAFS.
  { id: 'floor-zstd-blake3', head: 'ours/Node.js floor', source: 'dir', only: 'nydus-zstd' },
  {
    id: 'tar-x-mksquashfs-zstd-l3',
    head: 'ours from tar/tar -xf + mksquashfs level 3 (bar ≥ 1.0)',
    source: 'tar',
  },
];

/** @typedef {{ id: string, head: string, source: 'dir' | 'tar', only?: string }} RatioPeer */

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
  const peers = RATIO_PEERS.filter((p) => byId.has(p.id));
  const head = [
    'tool',
    'runs',
    'median s',
    'min-max s',
    'MB/s',
    'CPU s',
    'others CPU s',
    'peak RSS MiB',
    'output bytes',
    'output/source',
    ...peers.map((p) => p.head),
  ];
  const rows = [head, head.map(() => '---')];
  for (const r of results) {
    const name = r.tool.kind === 'ours' ? `**${r.tool.label}**` : r.tool.label;
    if (r.notRun === FULL_MODE_LEFT_OUT) continue;
    if (r.median === undefined) {
      rows.push([
        name,
        '0',
        r.notRun !== undefined ? 'not run (see "How it was produced")' : `failed: ${r.failed ?? 'no run'}`,
        ...head.slice(3).map(() => ''),
      ]);
      continue;
    }
    const m = r.median;
    const isBuild = r.tool.kind !== 'reference';
    rows.push([
      name,
      String(r.runs.length),
      fx(m.wall),
      `${fx(m.min)}-${fx(m.max)}`,
      fx(mbps(bytes, m.wall), 1),
      fx(m.cpu),
      fx(m.otherCpu),
      isBuild ? fx(m.rssKiB / 1024, 0) : '-',
      isBuild ? int(m.outputBytes) : '-',
      isBuild ? pct(m.outputBytes / bytes) : '-',
      ...peers.map((p) =>
        r.tool.kind === 'ours' &&
        (r.tool.source ?? 'dir') === p.source &&
        (p.only === undefined || p.only === r.tool.id)
          ? fx(ratio(r, byId.get(p.id)))
          : '-',
      ),
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
  if (z?.median === undefined || (sq?.median === undefined && sq3?.median === undefined)) {
    return `- **${ds.name}**: no comparison: ${z?.failed ?? sq3?.failed ?? sq?.failed ?? 'a tool did not run'}.`;
  }
  const r = ratio(z, sq);
  if (sq3?.median !== undefined && sq?.median === undefined) {
    const r3 = ratio(z, sq3);
    out.push(
      `**${ds.name}**: \`nydus-image create\` (zstd) builds at ${fx(mbps(bytes, z.median.wall), 1)} MB/s, ` +
        `\`mksquashfs -comp zstd -Xcompression-level 3\` (the same zstd level) at ` +
        `${fx(mbps(bytes, sq3.median.wall), 1)} MB/s: ratio **${fx(r3)}**, the bar (≥ 1.0) is ` +
        `**${r3 >= 1 ? 'met' : 'missed'}** (ours ${pct(z.median.outputBytes / bytes)} of the source, mksquashfs ` +
        `${pct(sq3.median.outputBytes / bytes)}).`,
    );
  } else if (sq3?.median !== undefined && sq?.median !== undefined) {
    const r3 = ratio(z, sq3);
    out.push(
      `**${ds.name}**: \`nydus-image create\` (zstd) builds at ${fx(mbps(bytes, z.median.wall), 1)} MB/s, ` +
        `\`mksquashfs -comp zstd -Xcompression-level 3\` (the same zstd level) at ` +
        `${fx(mbps(bytes, sq3.median.wall), 1)} MB/s: ratio **${fx(r3)}**, the bar (≥ 1.0) is ` +
        `**${r3 >= 1 ? 'met' : 'missed'}**. Against mksquashfs's default level (${fx(sq.median.wall)} s) the ratio is ` +
        `**${fx(r)}** (${r >= 1 ? 'met' : 'missed'}); that level costs it ${fx(sq.median.cpu)} CPU s instead of ` +
        `${fx(sq3.median.cpu)} and shrinks its output to ${pct(sq.median.outputBytes / bytes)} of the source ` +
        `(${pct(sq3.median.outputBytes / bytes)} at level 3, ours ${pct(z.median.outputBytes / bytes)}).`,
    );
  } else if (sq?.median !== undefined) {
    out.push(
      `**${ds.name}**: \`nydus-image create\` (zstd) builds at ${fx(mbps(bytes, z.median.wall), 1)} MB/s, ` +
        `\`mksquashfs -comp zstd\` at ${fx(mbps(bytes, sq.median.wall), 1)} MB/s: ratio **${fx(r)}** ` +
        `(${r >= 1 ? 'met' : 'missed'}).`,
    );
  }
  const fz = get('floor-zstd-blake3');
  const fn = get('floor-zstd');
  if (fz?.median !== undefined) {
    let s =
      `The Node.js floor (walk, lstat, read, zstd level 3 and blake3, no RAFS metadata) takes ` +
      `${fx(fz.median.wall)} s (${fx(fz.median.cpu)} CPU s)`;
    if (fn?.median !== undefined)
      s += `, ${fx(fn.median.wall)} s (${fx(fn.median.cpu)} CPU s) without blake3`;
    s += `: ours/floor **${fx(ratio(z, fz))}** (ours ${fx(z.median.wall)} s, ${fx(z.median.cpu)} CPU s)`;
    if (sq3?.median !== undefined) {
      const f3 = ratio(fz, sq3);
      s +=
        `, floor/mksquashfs level 3 **${fx(f3)}**: ` +
        (f3 >= 1
          ? 'the floor is at least as fast as mksquashfs, so Node.js itself does not stop the bar here'
          : 'even the floor is slower than mksquashfs, so on this data set the bar is stopped by it: ' +
            `a Node.js build of this design reaches at best ${fx(f3)}`);
    }
    out.push(`${s}.`);
  }
  const w = get('nydus-zstd-warm');
  if (w?.median !== undefined) {
    const extra = z.median.wall - w.median.wall;
    let s =
      `With V8 warmed up (the 3rd of 3 builds in one Node.js process, \`bench/b1-warm.mjs\`) the same ` +
      `build takes ${fx(w.median.wall)} s (${fx(w.median.cpu)} CPU s) against the cold process's ` +
      `${fx(z.median.wall)} s (${fx(z.median.cpu)} CPU s): ` +
      (extra > 0
        ? `${fx(extra)} s (${pct(extra / z.median.wall)}) of the cold build is start-up, module loading and ` +
          "V8's warm-up"
        : 'no faster, so start-up and warm-up are not where this build spends its time (its builds ' +
          `ranged ${fx(w.median.min)}-${fx(w.median.max)} s)`);
    if (sq3?.median !== undefined) {
      const rw = ratio(w, sq3);
      s +=
        `; warm/mksquashfs level 3 **${fx(rw)}** (with start-up and warm-up paid beforehand, ` +
        `${rw >= 1 ? 'at least as fast as' : 'still slower than'} mksquashfs)`;
    }
    if (fz?.median !== undefined)
      s += `; warm/floor ${fx(ratio(w, fz))} (the RAFS work: ${fx(w.median.wall - fz.median.wall)} s)`;
    out.push(`${s}.`);
  }
  const zt = get('nydus-tar-zstd');
  const zs = get('nydus-tarstream-zstd');
  const fl = get('tar-x-mksquashfs-zstd-l3');
  if (zs?.median !== undefined && fl?.median !== undefined) {
    const rs = ratio(zs, fl);
    out.push(
      `From a tar stream (\`cat SET.tar | nydus-image create --type tar-rafs /dev/stdin\`, as \`nydusify ` +
        `convert\` streams a layer): ${fx(zs.median.wall)} s (${fx(zs.median.cpu)} CPU s, with cat's) against ` +
        `\`tar -xf\` + mksquashfs level 3 ${fx(fl.median.wall)} s: ratio **${fx(rs)}**, the bar (≥ 1.0) is ` +
        `**${rs >= 1 ? 'met' : 'missed'}**.`,
    );
  }
  if (zt?.median !== undefined && fl?.median !== undefined) {
    const rt = ratio(zt, fl);
    out.push(
      `From the tar file itself (\`--type tar-rafs SET.tar\`, read at positions: the workers read the larger ` +
        `files from it): ${fx(zt.median.wall)} s (${fx(zt.median.cpu)} CPU s), ratio **${fx(rt)}** ` +
        `(${rt >= 1 ? 'at least as fast as' : 'slower than'} the floor); from the directory we take ${fx(z.median.wall)} s.`,
    );
  }
  if (er?.notRun !== undefined) out.push(`\`mkfs.erofs -zlz4hc\` ${er.notRun}.`);
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
    const pm = sq3?.median ?? sq?.median;
    const pl = sq3?.median !== undefined ? 'mksquashfs level 3' : 'mksquashfs';
    out.push(
      `The zstd build kept ${fx(z.median.cpu / z.median.wall, 1)} of ${nproc} cores busy ` +
        `(${fx(z.median.cpu)} CPU s; ${pl} ${fx((pm?.cpu ?? NaN) / (pm?.wall ?? NaN), 1)}, ` +
        `none ${fx(n.median.cpu / n.median.wall, 1)}); ` +
        `${fx(probe.fixedSeconds)} s of every build is the fixed start-up cost. ` +
        `Peak RSS ${fx(z.median.rssKiB / 1024, 0)} MiB against ${pl}'s ${fx((pm?.rssKiB ?? NaN) / 1024, 0)} MiB.`,
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
 * @typedef {{ kind: string, command: string, date: string, config: { mode?: string, rounds: number },
 *   machine: ReturnType<typeof import('./run.mjs').machine>, totalSeconds: number, result: unknown }} SubInput
 *   the saved results of the request-cost part (requests.mjs) or of the daemon-memory part (memory.mjs)
 * @typedef {{
 *   requests?: SubInput,
 *   memory?: SubInput,
 *   run?: any,
 *   renderRequests?: (result: any) => string,
 *   renderMemory?: (result: any) => string,
 * }} Extra
 */

/**
 * One of the sections written by requests.mjs or memory.mjs, between markers (so that a kept
 * B2/B3/B6 part can have it replaced), with the date, commit, CPU and mode of its run after its
 * heading.
 * @param {'requests' | 'memory'} name
 * @param {SubInput | undefined} input
 * @param {((result: any) => string) | undefined} render
 */
function subSection(name, input, render) {
  const title = name === 'requests' ? '### Request costs (B2, B3)' : '### Daemon memory (B6)';
  const file = `results-${name}.json`;
  let body;
  if (input === undefined) body = [title, '', `Not measured yet (no saved \`${file}\`).`];
  else if (render === undefined)
    body = [title, '', `Not rendered: \`bench/${name}.mjs\` is not there to render \`${file}\`.`];
  else {
    const text = render(input.result).trim();
    const lines = text.split('\n');
    const heading = lines[0]?.startsWith('###') ? (lines.shift() ?? title) : title;
    const m = input.machine;
    body = [
      heading,
      '',
      `Measured on ${input.date} (nydus-ts commit ${m.commit}; CPU ${cpuText(m)}, ${m.nproc} cores, ` +
        `${fx(m.memGiB, 1)} GiB; kernel ${m.kernel}; Node.js ${m.node}) by \`${input.command}\` ` +
        `(\`NYDUS_BENCH_ONLY=${name}\` runs it alone) in ${fx(input.totalSeconds / 60, 1)} min, saved in ` +
        `\`${file}\`. ${modeText(input)}`,
      '',
      ...lines,
    ];
  }
  return [`<!-- ${name}:begin -->`, ...body, `<!-- ${name}:end -->`].join('\n');
}

/**
 * A kept B2/B3/B6 part with its request-cost and daemon-memory sections replaced by `sections`
 * (appended when it had none).
 * @param {string} text
 * @param {Record<'requests' | 'memory', string>} sections
 */
function replaceSubSections(text, sections) {
  let out = text;
  for (const [name, section] of Object.entries(sections)) {
    const re = new RegExp(`<!-- ${name}:begin -->[\\s\\S]*?<!-- ${name}:end -->`);
    out = re.test(out) ? out.replace(re, () => section) : `${out.trimEnd()}\n\n${section}`;
  }
  return out;
}

/**
 * The run times of the last run (results-run.json): per part, the estimate and what it took.
 * @param {any} run
 * @returns {string[]}
 */
function runTimes(run) {
  const min = (/** @type {number} */ s) => fx(s / 60, 1);
  const rows = [
    ['part', 'estimate min', 'took min', 'status'],
    ['---', '---', '---', '---'],
    ['setup (apt, build of src/, data sets)', '-', min(run.setupSeconds), 'done'],
    ...run.parts.map((/** @type {any} */ p) => [p.title, min(p.estimate), min(p.seconds), p.status]),
    ['**in all**', min(run.estimateSeconds + run.setupSeconds), `**${min(run.totalSeconds)}**`, ''],
  ];
  const b = run.budgets;
  return [
    `## Run time of the last run`,
    '',
    `\`${run.command}\` (${modeOf(run)} mode) on ${run.date}, nydus-ts commit ${run.machine.commit}, CPU ` +
      `${cpuText(run.machine)}, ${run.machine.nproc} cores: ${run.parts.length} ${run.parts.length === 1 ? 'part' : 'parts'}, ` +
      `${fx(run.totalSeconds / 60, 1)} min in all. The estimate assumes the data sets and the peers' images ` +
      'are cached from an earlier run (making them the first time adds the data sets, their tar files and ' +
      `the peers' images: ${fx(run.prepSeconds / 60, 1)} min of data sets in this run). Waiting for a quiet ` +
      `machine took ${fx(b.quietWaited / 60, 1)} min of a budget of ${fx(b.quietSeconds / 60, 1)}, repeating ` +
      `disturbed runs ${fx(b.repeated / 60, 1)} min of ${fx(b.repeatSeconds / 60, 1)}` +
      `${b.repeatsRefused > 0 ? ` (${plural(b.repeatsRefused, 'disturbed run')} kept for want of budget)` : ''}.`,
    '',
    md(rows),
    '',
  ];
}

/**
 * BENCHMARKS.md: B1 from its run, B2/B3/B6, B4/B5/B7 and B8 from theirs (any may be missing; a
 * missing part may be given as the text it had in the existing report, `kept`), the request
 * costs and the daemon memory under B2/B3/B6 (`extra`), and the run times of the last run.
 * @param {B1Input | undefined} b1
 * @param {import('./report-mount.mjs').MountInput} [mounts]
 * @param {import('./report-registry.mjs').RegistryInput} [registry]
 * @param {{ b1?: string, mounts?: string, registry?: string, containerd?: string, remote?: string }} [kept]
 * @param {import('./report-containerd.mjs').ContainerdInput} [containerd]
 * @param {import('./report-remote.mjs').RemoteInput} [remote]
 * @param {Extra} [extra]
 */
export function renderReport(
  b1,
  mounts,
  registry,
  kept = {},
  containerd = undefined,
  remote = undefined,
  extra = {},
) {
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
  if (extra.requests !== undefined) when.push(`the request costs on ${extra.requests.date}`);
  if (extra.memory !== undefined) when.push(`the daemon memory on ${extra.memory.date}`);
  L.push(
    `Generated by \`npm run bench\` (\`bench/run.mjs\`; \`npm run bench:quick\` is the everyday run at small ` +
      `sizes, and each part says which mode produced it)` +
      `${when.length > 0 ? `: ${when.join(', ')}` : ''}. Do not edit by hand: run the command ` +
      'again (`NYDUS_BENCH_ONLY=b1`, `=b2,b3,b6`, `=requests`, `=memory`, `=b4,b5,b7`, `=b8`, `=b9` or ' +
      '`=faults` reruns one part and keeps the others). The machines ' +
      'here are small and shared, so only the **ratios** mean anything: every ' +
      'tool ran on the same data, in the same run, alternating (see `../shared/docs/benchmarks.md` ' +
      'for what is measured and the bar).',
    '',
  );
  if (b1 !== undefined) L.push(...renderB1(b1));
  else if (kept.b1 !== undefined) L.push(kept.b1, '');
  else L.push('## B1: build throughput', '', 'Not measured yet (no saved B1 results).', '');
  const sections = {
    requests: subSection('requests', extra.requests, extra.renderRequests),
    memory: subSection('memory', extra.memory, extra.renderMemory),
  };
  if (mounts !== undefined)
    L.push(
      ...renderMounts(mounts, {
        ...sections,
        ...(extra.memory !== undefined && { memoryInput: extra.memory }),
      }),
    );
  else if (kept.mounts !== undefined) L.push(replaceSubSections(kept.mounts, sections), '');
  else if (extra.requests !== undefined || extra.memory !== undefined)
    L.push(
      '## B2, B3, B6: mounted images',
      '',
      'Not measured yet (no saved B2/B3/B6 results).',
      '',
      sections.requests,
      '',
      sections.memory,
      '',
    );
  if (registry !== undefined) L.push(...renderRegistry(registry));
  else if (kept.registry !== undefined) L.push(kept.registry, '');
  if (containerd !== undefined) L.push(...renderContainerd(containerd));
  else if (kept.containerd !== undefined) L.push(kept.containerd, '');
  if (remote !== undefined) L.push(...renderRemote(remote));
  else if (kept.remote !== undefined) L.push(kept.remote, '');
  if (extra.run !== undefined) L.push(...runTimes(extra.run));
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
 * The rows not run on some data set, and why.
 * @param {B1Input} o
 * @returns {string[]}
 */
function notRunText(o) {
  /** @type {Map<string, string[]>} rows left out in the full mode, by data set */
  const full = new Map();
  /** @type {Map<string, string[]>} data sets a row is left out on for its own reason, by reason */
  const other = new Map();
  for (const { ds, results } of o.measured) {
    for (const r of results) {
      if (r.notRun === undefined) continue;
      if (r.notRun === FULL_MODE_LEFT_OUT) full.set(ds.name, [...(full.get(ds.name) ?? []), r.tool.label]);
      else {
        const k = `\`${r.tool.label}\` ${r.notRun}`;
        other.set(k, [...(other.get(k) ?? []), ds.name]);
      }
    }
  }
  const L = [...other].map(([k, sets]) => `- Left out (${sets.join(', ')}): ${k}.`);
  if (full.size > 0) {
    L.push(
      '- Left out in the full mode, to keep `npm run bench` under 60 minutes (rows no bar is judged on, ' +
        'or the second bar where it costs the most; `npm run bench:quick` runs every row on every data set): ' +
        [...full].map(([set, rows]) => `${set}: ${rows.map((x) => `\`${x}\``).join(', ')}`).join('; ') +
        '.',
    );
  }
  return L;
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
    `- ${o.config.rounds} round${o.config.rounds === 1 ? '' : 's'} per data set` +
      (o.fewRounds !== undefined && o.fewRounds < o.config.rounds
        ? ` for the rows a bar is judged on (ours with zstd from the directory and from the tar file, ` +
          `mksquashfs level 3, the tar floor and the Node.js floor with blake3), ${o.fewRounds} for the others (${o.tools
            .filter((t) => t.few === true)
            .map((t) => `\`${t.label}\``)
            .join(', ')}), which run in the first rounds: the slow peers alone would take ` +
          'a third of the run at 5 rounds; the "runs" column gives each row\'s count'
        : '') +
      '. A round runs every tool once, each round in its own shuffled order (seeded by the round, ' +
      'the same in every run of the bench), so a tool follows different tools from round to round: ' +
      'a run can change the next one (a tar stream build was 0.3 s slower right after the build from ' +
      'the tar file than after the tar floor). Tables give the median and the range of the rounds.',
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
      'This machine is shared with other work: before every run the harness waits (at most 1 min, ' +
      'within a budget for the whole run) until the machine has used under 10% of a core for half a ' +
      'second, and a run during which the rest of the machine used more than max(0.3 s, 20% of its ' +
      'wall time) is discarded and run again, at most twice and within a budget for the whole run ' +
      `(${quietText(o.measured)}).`,
    '- MB/s = bytes of the source regular files / median seconds (MB = 10^6 bytes). A ratio ours/peer ' +
      "is the peer's median seconds over ours on the same data: above 1.0 we are faster.",
    '- Every tool uses the cores as it chooses; "CPU s" over "median s" shows how many it kept busy. ' +
      'Ours: `nydus-image create --compressor C --fs-version 6 -B OUT/bootstrap -b OUT/blob SRC` ' +
      '(blake3 chunk digests, 1 MiB chunks, the default bootstrap validation included), compiled ' +
      "from src/ into the work directory at the start with the project's tsc, so that builds of " +
      'dist/ during the run cannot change what is measured.',
    '- Peers: `mksquashfs SRC OUT -comp zstd -Xcompression-level 3 -noappend -quiet` is the peer of the ' +
      'bar (issue #12: the zstd level ours uses); the same at its default zstd level (15 per ' +
      '`mksquashfs -help`, far more CPU per byte) is kept as a second bar; `mkfs.erofs -zlz4hc OUT SRC`. ' +
      '`tar -cf - -C SRC . | wc -c` is not a peer: it is the cost of reading the files once.',
    '- The Node.js floor (`bench/b1-floor.mjs`, rows "Node.js floor"; the column "ours/Node.js floor" ' +
      'is its median seconds over ours): the least a Node.js program needs for the irreducible work of ' +
      'our zstd build on the same data, with no RAFS metadata: walk the directory and lstat every ' +
      'entry, read every regular file (a hard link once) in 1 MiB chunks, compress each with zstd ' +
      "level 3 through the builder's own binding (the system libzstd through koffi, from the same " +
      'build of src/), with the blake3 chunk digests RAFS requires (`@napi-rs/blake-hash`, as the ' +
      'builder) or without them (the second row), and write the compressed bytes to one file. The ' +
      "builder's worker setup (one worker thread per core, the workers read the files, opened in " +
      'groups with `posix_fadvise` WILLNEED), made as cheap as it can be: the main thread walks and ' +
      'publishes the chunks in shared memory as it goes, the workers claim them with atomics (no ' +
      'message per chunk) and write each compressed chunk at a place reserved with one atomic add ' +
      '(no hand-back to the main thread, chunks in the order they are done). Left out, as not ' +
      "irreducible: the tree, the bootstrap and its validation, the blob's sha256 and meta, " +
      'deduplication, the checks that a file did not change while it was read.',
    '- Ours with V8 warmed up (`bench/b1-warm.mjs`, row "nydus-image build() with V8 warmed up"; no ' +
      "bar is judged on it): the builder's `build()` from the same build of src/, with the options of " +
      'the zstd row, run three times in one Node.js process with the page cache dropped (after a ' +
      '`sync`) before each; the third build times itself (wall clock around `build()`, CPU of the whole ' +
      "process in that time, its chunk workers included) and that is the row's seconds and CPU s. By " +
      "then the main thread's code is compiled and optimized by V8 and every module is loaded; the " +
      'chunk workers still start anew for each build, as they do in every build. The cold row minus ' +
      'this one is what a build pays for being the first thing a fresh Node.js process does: start-up, ' +
      "module loading and V8's warm-up (bytecode, feedback, optimizing compiles); this one minus the " +
      "Node.js floor is the RAFS work itself. Its peak RSS is the process's over the three builds.",
    '- The tar path (what `nydusify convert` does per layer): a tar file of each data set (`tar -cf ' +
      'SET.tar -C SRC .`, GNU format, made once and cached in the work directory) streamed through a ' +
      'pipe, as a layer comes from a registry (`cat SET.tar | nydus-image create --type tar-rafs ' +
      '--compressor zstd --fs-version 6 -B OUT/bootstrap -b OUT/blob /dev/stdin`, one shell timed as one ' +
      "run, cat's CPU included; the bar is judged on this row), and built from the file itself " +
      '(`... SET.tar`: read at positions, the workers read the larger files straight from it), against ' +
      'the floor: `tar -xf SET.tar` into an empty directory then `mksquashfs` of it at ' +
      'zstd level 3, one shell timed as one run (its output bytes are the image only). The cold caches ' +
      'hold for the tar file as for the directories. From the pipe, ours writes its blob with O_DIRECT ' +
      '(its default for a tar on a pipe: README), so the device writes are inside its time; every other ' +
      'row writes through the page cache, whose writeback comes after the run.' +
      (o.measured.some((x) => x.tar !== undefined)
        ? ` Tar files: ${o.measured
            .filter((x) => x.tar !== undefined)
            .map((x) => `${x.ds.name} ${int(x.tar?.bytes ?? NaN)} bytes`)
            .join(', ')}.`
        : ''),
    `- Fixed cost of one \`nydus-image create\` (empty source directory, median of ${o.config.rounds}): ` +
      `${fx(o.probe.fixedSeconds)} s (Node.js start-up, module loading, worker threads, native libraries).`,
    `- Run time: ${o.prepSeconds > 0 ? `data sets made in ${fx(o.prepSeconds, 0)} s, ` : 'data sets cached from an earlier run, '}measurements ` +
      `${fx(o.benchSeconds / 60, 1)} min (of which ${fx(o.measured.reduce((t, x) => t + x.quiet.waited, 0) / 60, 1)} min ` +
      `waiting for a quiet machine, plus the repeated runs), ${fx(o.totalSeconds / 60, 1)} min in all.`,
    modeOf(o) === 'quick' || o.config.mode === undefined
      ? `- Sizes: ${sizesText({ bigCount: 4, ...o.config })} (\`NYDUS_BENCH_BIG_MIB\`, \`NYDUS_BENCH_SMALL\`). ` +
          '`../shared/docs/benchmarks.md` asks for more (256 MiB files, 50k small files, a second rootfs ' +
          'of 500 MB+ with extra packages): `npm run bench` (the full mode) measures those.'
      : `- Sizes of \`../shared/docs/benchmarks.md\`: ${sizesText(o.config)}; the whole \`npm run bench\` ` +
          'is kept under 60 minutes on 2 cores (see "Run time of the last run" at the end).',
    ...notRunText(o),
    '',
  );

  L.push('### Machine', '');
  const mach = [
    ['CPU', cpuText(m)],
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
  const ratiosTo = (/** @type {string} */ ours, /** @type {string} */ peer) =>
    o.measured.map(({ ds, results }) => ({
      ds,
      r: ratio(
        results.find((r) => r.tool.id === ours),
        results.find((r) => r.tool.id === peer),
      ),
    }));
  const barText = (/** @type {{ ds: DataSet, r: number }[]} */ xs) => {
    const shown = xs.filter((x) => Number.isFinite(x.r));
    const met = shown.filter((x) => x.r >= 1);
    return `met on ${met.length} of ${shown.length} data sets (${shown.map((x) => `${x.ds.name} ${fx(x.r)}`).join(', ')})`;
  };
  const tarRatios = ratiosTo('nydus-tarstream-zstd', 'tar-x-mksquashfs-zstd-l3');
  const tarFileRatios = ratiosTo('nydus-tar-zstd', 'tar-x-mksquashfs-zstd-l3');
  L.push(
    `The bar (issue #12: \`nydus-image create\` with zstd at least as fast as \`mksquashfs -comp zstd ` +
      `-Xcompression-level 3\`, the same zstd level, on every data set) is ` +
      `${barText(ratiosTo('nydus-zstd', 'mksquashfs-zstd-l3'))}; against mksquashfs's default level (15, far more ` +
      `CPU per byte) it is ${barText(ratiosTo('nydus-zstd', 'mksquashfs-zstd'))}.` +
      (tarRatios.some((x) => Number.isFinite(x.r))
        ? ` From a tar stream (a pipe, as \`nydusify convert\` streams a layer), against \`tar -xf\` + ` +
          `mksquashfs level 3, it is ${barText(tarRatios)}.`
        : '') +
      (tarFileRatios.some((x) => Number.isFinite(x.r))
        ? ` From the tar file itself (read at positions) the same ratio is ${tarFileRatios
            .filter((x) => Number.isFinite(x.r))
            .map((x) => `${x.ds.name} ${fx(x.r)}`)
            .join(', ')}.`
        : ''),
    '',
  );
  const floorRatios = ratiosTo('floor-zstd-blake3', 'mksquashfs-zstd-l3');
  if (floorRatios.some((x) => Number.isFinite(x.r))) {
    const ours = ratiosTo('nydus-zstd', 'floor-zstd-blake3').filter((x) => Number.isFinite(x.r));
    const slower = floorRatios.filter((x) => Number.isFinite(x.r) && x.r < 1).map((x) => x.ds.name);
    L.push(
      `The Node.js floor (\`bench/b1-floor.mjs\`, see "How it was produced") against mksquashfs level 3 ` +
        `(its seconds over the floor's): ${floorRatios
          .filter((x) => Number.isFinite(x.r))
          .map((x) => `${x.ds.name} ${fx(x.r)}`)
          .join(', ')}; ours against the floor (the floor's seconds over ours): ` +
        `${ours.map((x) => `${x.ds.name} ${fx(x.r)}`).join(', ')}. ` +
        (slower.length > 0
          ? `Where the floor itself is slower than mksquashfs (${slower.join(', ')}), that is the measured ` +
            'floor stopping the bar: no build in Node.js of this design gets below it.'
          : 'The floor is at least as fast as mksquashfs on every data set: the bar is not stopped by Node.js.'),
      '',
    );
  }
  const warmRatios = ratiosTo('nydus-zstd-warm', 'mksquashfs-zstd-l3');
  if (warmRatios.some((x) => Number.isFinite(x.r))) {
    const cold = ratiosTo('nydus-zstd', 'nydus-zstd-warm').filter((x) => Number.isFinite(x.r));
    L.push(
      'Ours with V8 warmed up (`bench/b1-warm.mjs`: the 3rd of 3 builds in one Node.js process) against ' +
        `mksquashfs level 3: ${warmRatios
          .filter((x) => Number.isFinite(x.r))
          .map((x) => `${x.ds.name} ${fx(x.r)}`)
          .join(', ')}; the cold process against the warm build (the warm build's seconds over the ` +
        `cold one's): ${cold.map((x) => `${x.ds.name} ${fx(x.r)}`).join(', ')}. Where the warm build is ` +
        "the faster, the difference is what a build pays for being a fresh Node.js process's first work: " +
        "start-up, module loading and V8's warm-up of the main thread's code; where it is not, that is " +
        'not where the build spends its time.',
      '',
    );
  }
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
