// The B4, B5 and B7 part of BENCHMARKS.md, from the measurements of one run of registry.mjs.
// As in the other parts, every number and sentence comes from those measurements.
import {
  fx,
  int,
  machineSection,
  mb,
  md,
  med,
  partHeading,
  pct,
  plural,
  range,
  startTable,
  verdict,
} from './report-common.mjs';

/** The bar of ../shared/docs/benchmarks.md. */
export const REGISTRY_BAR = { b4: 10, b5: 1.2, b7: 1.5, readShare: 0.1 };

/**
 * @typedef {{
 *   kind: 'registry',
 *   command: string,
 *   config: { work: string, rounds: number, only: string[] },
 *   date: string,
 *   machine: ReturnType<typeof import('./run.mjs').machine> & { registryVersions: Record<string, string> },
 *   load: { before: string, after: string },
 *   totalSeconds: number,
 *   result: Awaited<ReturnType<typeof import('./registry.mjs').benchRegistry>>,
 * }} RegistryInput
 */

/** @param {number} x */
const pct1 = (x) => `${fx(x * 100, 1)}%`;

/**
 * @param {RegistryInput} o
 * @returns {string[]}
 */
export function renderRegistry(o) {
  const r = o.result;
  const m = o.machine;
  const v = m.registryVersions;
  const L = partHeading('B4, B5, B7: the registry path', o);
  const ds = r.dataSet;
  const img = r.image;
  const treeBytes = ds.stats?.bytes ?? NaN;
  L.push(
    `- Command: \`${o.command}\` with \`NYDUS_BENCH_ONLY=b4,b5,b7\` (\`bench/registry.mjs\`); work directory ` +
      `\`${o.config.work}\`, where the data set and its OCI image are cached between runs.`,
    `- Data set **${ds.name}**: ${ds.description} ${int(ds.stats?.files ?? NaN)} regular files, ` +
      `${int(ds.stats?.dirs ?? NaN)} directories, ${int(ds.stats?.symlinks ?? NaN)} symlinks, ` +
      `${int(treeBytes)} bytes of files.`,
    `- Its OCI image (made by the harness: tar + \`gzip -6\` per layer, an OCI layout pushed with ` +
      `\`skopeo copy\`): ${plural(img.layers.length, 'layer')}, ${int(img.compressedBytes)} bytes compressed: ` +
      img.layers
        .map((l) => `${l.what} (${int(l.tarBytes)} bytes of tar, ${int(l.size)} gzipped)`)
        .join('; ') +
      '.',
    `- Registry: Debian \`docker-registry\` ${v['docker-registry'] ?? ''} on 127.0.0.1 (plain HTTP, ` +
      'filesystem storage under the work directory, started afresh by the run).',
    `- ${o.config.rounds} round${o.config.rounds === 1 ? '' : 's'}; in each, ours and the peer run once, ` +
      'and who goes first swaps every round. Before every run: `sync; echo 3 > /proc/sys/vm/drop_caches`, ' +
      'an empty work directory (no blob cache, no layers from an earlier run). Tables give the median and ' +
      'the range of the rounds.',
    '- **B7**: ours is `nydusify -D convert --source REG/rootfs:oci --target REG/rootfs-nydus-N:nydus ' +
      '--plain-http --work-dir W --output-json W/metric.json` (defaults: RAFS v6, zstd, 1 MiB chunks), each ' +
      'round to a new repository so every blob is really pushed. The floor is `skopeo copy ' +
      'docker://REG/rootfs:oci oci:DIR:t` + `umoci raw unpack --image DIR:t TREE` + ' +
      '`mksquashfs TREE OUT -comp zstd -Xcompression-level 3 -noappend` (one image of the unpacked tree; ' +
      'it pushes nothing). Wall time around the process, CPU time and peak RSS from GNU time (for the ' +
      "floor: of its three steps together). Where convert's time goes comes from the timestamps of its " +
      'debug log (see the breakdown).',
    '- **B4**: `bench/link.mjs` (a token bucket of 100 Mbit/s per direction shared by all connections, ' +
      'in its own process) sits in front of the registry; both tools reach the registry only through ' +
      `its address. Ours: \`nydusify mount --target LINK/rootfs-nydus-1:nydus --target-insecure ` +
      '--mount-path M --work-dir W` (fetches the bootstrap layer, starts nydusd with the registry ' +
      `backend), then, once M is mounted, \`chroot M /bin/sh -c "${r.cmd}"\`; then SIGTERM. The peer: ` +
      '`skopeo copy docker://LINK/rootfs:oci oci:DIR:t` + `umoci unpack --image DIR:t BUNDLE` + ' +
      `\`chroot BUNDLE/rootfs /bin/sh -c "${r.cmd}"\`. The time is from the start of the first command ` +
      'to the first byte the command prints (monotonic clock).',
    "- **B5**: after the command of ours, nydusd's API socket (W/nydusd.sock) gives the backend's " +
      "`read_amount_total` (bytes fetched from the registry, compressed) and the file system's `data_read` " +
      '(bytes the command read through the mount); the bootstrap is the file `nydusify mount` fetched; ' +
      'the link counts every byte it carried to the client (HTTP headers, manifest, config, bootstrap layer ' +
      'and blob ranges).',
    `- Load: the machine is shared with other work (load average ${o.load.before} at the start, ` +
      `${o.load.after} at the end); before every run the harness waits (at most 20 s) for under 10% of a ` +
      `core busy (${fx(r.quietWaited, 0)} s waited in all); "machine CPU s" is the CPU time the whole ` +
      'machine used during a run (ours, the peer, the registry, the link and everything else).',
    `- Run time ${fx(o.totalSeconds / 60, 1)} min in all${ds.prepSeconds ? `, of which ${fx(ds.prepSeconds / 60, 1)} min making the data set` : ''}` +
      `${img.seconds ? ` and ${fx(img.seconds / 60, 1)} min its OCI image` : ''}.`,
    '',
  );

  L.push(
    ...machineSection(m, [
      ['docker-registry, skopeo, umoci', `Debian ${v['docker-registry']}, ${v['skopeo']}, ${v['umoci']}`],
      ['squashfs-tools', v['squashfs-tools'] ?? ''],
    ]),
  );

  // ---------------------------------------------------------------- B7
  L.push('### B7: conversion', '');
  const ours7 = r.b7.ours.filter((x) => x.failed === undefined);
  const floor7 = r.b7.floor.filter((x) => x.failed === undefined);
  const b7Ratio = med(ours7.map((x) => x.wall)) / med(floor7.map((x) => x.wall));
  const layerSeconds = (/** @type {string} */ digest) =>
    med(
      ours7.map((x) => {
        const p = x.phases?.perLayer;
        return p !== undefined && !Array.isArray(p) ? (p[digest] ?? NaN) : NaN;
      }),
    );
  if (ours7.length === 0 || floor7.length === 0) {
    L.push(
      `Not measured: ${r.b7.failed ?? (floor7.length === 0 ? `the floor failed: ${r.b7.floor[0]?.failed}` : 'no runs')}.`,
      '',
    );
  } else {
    const rows = [
      [
        'tool',
        'median s',
        'min-max s',
        'CPU s',
        'peak RSS MiB',
        'steps (median s)',
        `ours/floor (bar ≤ ${REGISTRY_BAR.b7})`,
      ],
    ];
    rows.push(rows[0]?.map(() => '---') ?? []);
    const ph = (/** @type {string} */ k) => med(ours7.map((x) => x.phases?.[k] ?? NaN));
    rows.push([
      '**nydusify convert**',
      fx(med(ours7.map((x) => x.wall))),
      range(ours7.map((x) => x.wall)),
      fx(med(ours7.map((x) => x.cpu))),
      fx(med(ours7.map((x) => x.rssKiB)) / 1024, 0),
      `layers (pull + build, streamed) ${fx(ph('layers'))}, pushes + merge ${fx(ph('pushesAndMerge'))}, final pushes ${fx(ph('finalPushes'))}`,
      fx(b7Ratio),
    ]);
    const fs = (/** @type {string} */ k) => med(floor7.map((x) => x.steps?.[k] ?? NaN));
    rows.push([
      'skopeo copy + umoci raw unpack + mksquashfs zstd level 3',
      fx(med(floor7.map((x) => x.wall))),
      range(floor7.map((x) => x.wall)),
      fx(med(floor7.map((x) => x.cpu))),
      fx(med(floor7.map((x) => x.rssKiB)) / 1024, 0),
      `pull ${fx(fs('pull'))}, unpack ${fx(fs('unpack'))}, mksquashfs ${fx(fs('mksquashfs'))}`,
      '-',
    ]);
    L.push(md(rows), '');

    L.push("Where `nydusify convert`'s time goes (medians, from its debug log's timestamps):", '');
    const prow = [
      ['phase', 'median s', 'share'],
      ['---', '---', '---'],
    ];
    const total = med(ours7.map((x) => x.wall));
    const add = (/** @type {string} */ label, /** @type {number} */ s) =>
      prow.push([label, fx(s), pct(s / total)]);
    add('start-up (process start to its first log line: Node.js, modules)', ph('startup'));
    add('source manifest and config', ph('beforePull') + ph('manifestAndConfig'));
    add(
      'layers: pull, decompress and build, streamed, several layers at once as convert schedules ' +
        'them (first layer started to last layer built)',
      ph('layers'),
    );
    r.image.layers.forEach((l, i) => {
      prow.push([
        `- layer ${i + 1} (${mb(l.size)} MB gzip, ${mb(l.tarBytes)} MB tar: ${l.what}), from its start to its blob`,
        fx(layerSeconds(l.digest)),
        '',
      ]);
    });
    add('blob pushes still running after the last layer, and merging the bootstraps', ph('pushesAndMerge'));
    add('bootstrap layer, config and manifest pushes', ph('finalPushes'));
    add('exit', ph('exit'));
    L.push(md(prow), '');
    if (r.converted !== undefined) {
      L.push(
        `The converted image: ${int(r.converted.blobBytes)} bytes in the registry (blobs, bootstrap layer ` +
          `and config; ${pct(r.converted.blobBytes / treeBytes)} of the tree), its bootstrap ` +
          `${int(r.converted.bootstrapBytes)} bytes uncompressed.`,
        '',
      );
    }
    const mt = ours7[0]?.metric;
    if (mt !== undefined) {
      L.push(
        `Its \`--output-json\` (round 1): SourceImageSize ${int(mt.SourceImageSize)}, TargetImageSize ` +
          `${int(mt.TargetImageSize)}, SourcePullElapsed ${fx(mt.SourcePullElapsed / 1e9)} s (manifest and ` +
          `config only: the layers are pulled while they convert), ConversionElapsed ${fx(mt.ConversionElapsed / 1e9)} s, ` +
          `TargetPushElapsed ${fx(mt.TargetPushElapsed / 1e9)} s.`,
        '',
      );
    }
  }

  // ---------------------------------------------------------------- B4
  L.push('### B4: lazy start over a shared 100 Mbit/s link', '');
  const ours4 = r.b4.ours;
  const peer4 = r.b4.peer;
  const b4Ratio = med(peer4.map((x) => x.first)) / med(ours4.map((x) => x.first));
  if (ours4.length === 0 || peer4.length === 0) {
    L.push(`Not measured: ${r.b4.failed ?? 'no runs'}.`, '');
  } else {
    const st = (/** @type {any[]} */ runs, /** @type {string} */ k) =>
      fx(med(runs.map((x) => x.steps[k] ?? NaN)));
    L.push(
      startTable(
        REGISTRY_BAR.b4,
        (x) => x.otherCpu,
        {
          name: '**nydusify mount + chroot MNT CMD**',
          runs: ours4,
          steps:
            `until mounted ${st(ours4, 'mount')} (nydusify start-up ${st(ours4, 'mountStartup')}, manifest ` +
            `${st(ours4, 'mountManifest')}, bootstrap ${st(ours4, 'mountBootstrap')}, nydusd start ${st(ours4, 'mountNydusd')}), ` +
            `then the command's first output ${st(ours4, 'command')}`,
        },
        {
          name: 'skopeo copy + umoci unpack + chroot BUNDLE/rootfs CMD',
          runs: peer4,
          steps: `pull ${st(peer4, 'pull')}, unpack ${st(peer4, 'unpack')}, command ${st(peer4, 'command')}`,
        },
      ),
      '',
    );
    L.push(
      `The command printed "${ours4[0]?.output ?? ''}" in every run of ours` +
        `${ours4.every((x) => x.output === ours4[0]?.output) && peer4.every((x) => x.output === ours4[0]?.output) ? ' and of the peer' : ' (the outputs differ between runs!)'}.` +
        `${r.b4.failed !== undefined ? ` **Some runs failed**: ${r.b4.failed}` : ''}`,
      '',
    );
  }

  // ---------------------------------------------------------------- B5
  L.push('### B5: bytes fetched for B4', '');
  const b5 = ours4.map((x) => x.b5).filter((x) => x !== undefined);
  const be = med(b5.map((x) => x.readAmountTotal));
  const read = med(b5.map((x) => x.dataRead));
  const boot = med(b5.map((x) => x.bootstrapBytes));
  const linkDown = med(ours4.map((x) => x.linkDown));
  const b5Ratio = be / read;
  const linkRatio = linkDown / (read + boot);
  const blobShare = (r.converted?.blobBytes ?? NaN) / treeBytes;
  if (b5.length > 0) {
    const rows = [
      ['what', 'bytes (median)', 'of the tree', 'of the compressed OCI image'],
      ['---', '---', '---', '---'],
      [
        '`data_read`: what the command read through the mount',
        int(read),
        pct1(read / treeBytes),
        pct1(read / img.compressedBytes),
      ],
      [
        '`read_amount_total`: fetched from the registry by nydusd (compressed chunks)',
        int(be),
        pct1(be / treeBytes),
        pct1(be / img.compressedBytes),
      ],
      [
        'bootstrap, uncompressed (fetched by `nydusify mount` as a gzip layer)',
        int(boot),
        pct1(boot / treeBytes),
        pct1(boot / img.compressedBytes),
      ],
      [
        'all bytes the link carried to the client',
        int(linkDown),
        pct1(linkDown / treeBytes),
        pct1(linkDown / img.compressedBytes),
      ],
      [
        'the peer: all bytes the link carried (full pull)',
        int(med(peer4.map((x) => x.linkDown))),
        pct1(med(peer4.map((x) => x.linkDown)) / treeBytes),
        pct1(med(peer4.map((x) => x.linkDown)) / img.compressedBytes),
      ],
    ];
    L.push(md(rows), '');
    L.push(
      `Backend requests: ${int(med(b5.map((x) => x.readCount)))} (median), errors ${int(Math.max(...b5.map((x) => x.readErrors)))}. ` +
        `Fetched / read = ${fx(b5Ratio)} (bar ≤ ${REGISTRY_BAR.b5}: ${verdict(b5Ratio <= REGISTRY_BAR.b5)}); ` +
        `counting everything that crossed the link, link bytes / (read + bootstrap) = ${fx(linkRatio)}.` +
        (Number.isFinite(blobShare)
          ? ` The fetched bytes are compressed and the read bytes are not: at the image's average ` +
            `compression (its blobs are ${pct(blobShare)} of the tree's bytes) the fetched chunks hold about ` +
            `${mb(be / blobShare)} MB of file data, ${fx(be / blobShare / read)}x what the command read (the rest is ` +
            'read-ahead and the unread parts of the chunks it touched).'
          : ''),
      '',
    );
  } else L.push('Not measured (no run of ours in B4).', '');

  // ---------------------------------------------------------------- Reading
  L.push('### Reading', '');
  const out = [];
  if (Number.isFinite(b4Ratio)) {
    const readShare = read / treeBytes;
    const stOurs = (/** @type {string} */ k) => med(ours4.map((x) => x.steps[k] ?? NaN));
    /** @type {[string, number][]} */
    const steps = [
      ['nydusify start-up (Node.js and its modules, cold, to its first log line)', stOurs('mountStartup')],
      ['manifest (with the HTTPS attempt and the fallback to HTTP)', stOurs('mountManifest')],
      ['fetching the bootstrap', stOurs('mountBootstrap')],
      ["nydusd's start until the mount shows", stOurs('mountNydusd')],
      ['the command until its first output', stOurs('command')],
    ];
    const biggest = steps.filter(([, x]) => Number.isFinite(x)).sort((a, b) => b[1] - a[1]);
    out.push(
      `- **B4**: from the reference to the first output, ours takes ${fx(med(ours4.map((x) => x.first)))} s and ` +
        `the full pull + unpack ${fx(med(peer4.map((x) => x.first)))} s: **${fx(b4Ratio, 1)}x** faster, the bar ` +
        `(≥ ${REGISTRY_BAR.b4}x) is ${verdict(b4Ratio >= REGISTRY_BAR.b4)}. The command read ${pct(readShare)} of the ` +
        `tree's bytes (${readShare < REGISTRY_BAR.readShare ? 'under' : '**not** under'} the 10% the bar is about). ` +
        `Of ours, ${fx(stOurs('mount'))} s pass before the mount is up and ${fx(stOurs('command'))} s ` +
        'in the command (every file it opens is fetched on demand over the link); ' +
        `${biggest.length > 0 ? `the largest steps: ${biggest.map(([k, x]) => `${k} ${fx(x)} s`).join(', ')}` : 'no finer steps were logged'}` +
        '. The link alone would carry ' +
        `ours' ${mb(linkDown)} MB in ${fx(linkDown / 12.5e6)} s and the peer's ` +
        `${mb(med(peer4.map((x) => x.linkDown)))} MB in ${fx(med(peer4.map((x) => x.linkDown)) / 12.5e6)} s.`,
    );
  }
  if (Number.isFinite(b5Ratio)) {
    out.push(
      `- **B5**: nydusd fetched ${mb(be)} MB for ${mb(read)} MB read (${fx(b5Ratio)}x; bar ≤ ${REGISTRY_BAR.b5}: ` +
        `${verdict(b5Ratio <= REGISTRY_BAR.b5)}), plus a ${mb(boot)} MB bootstrap; the link carried ${mb(linkDown)} MB ` +
        `in all (${fx(linkRatio)}x read + bootstrap).`,
    );
  }
  if (Number.isFinite(b7Ratio)) {
    const ph = (/** @type {string} */ k) => med(ours7.map((x) => x.phases?.[k] ?? NaN));
    const total = med(ours7.map((x) => x.wall));
    const parts = [
      ['the layers (pull + build)', ph('layers')],
      ['start-up', ph('startup')],
      ['pushes and merge after the last layer', ph('pushesAndMerge')],
      ['final pushes', ph('finalPushes')],
    ].sort((a, b) => Number(b[1]) - Number(a[1]));
    const biggest = [...r.image.layers].sort((a, b) => b.tarBytes - a.tarBytes)[0];
    const bigS = biggest !== undefined ? layerSeconds(biggest.digest) : NaN;
    const cores = (/** @type {any[]} */ runs) => med(runs.map((x) => x.cpu)) / med(runs.map((x) => x.wall));
    out.push(
      `- **B7**: \`nydusify convert\` takes ${fx(total)} s (${fx(med(ours7.map((x) => x.cpu)))} CPU s, ` +
        `${fx(cores(ours7), 1)} of ${m.nproc} cores busy; the floor ${fx(cores(floor7), 1)}), the floor ` +
        `${fx(med(floor7.map((x) => x.wall)))} s: ratio **${fx(b7Ratio)}** (bar ≤ ${REGISTRY_BAR.b7}: ` +
        `${verdict(b7Ratio <= REGISTRY_BAR.b7)}). Most of convert's time is ${parts[0]?.[0]} ` +
        `(${pct(Number(parts[0]?.[1]) / total)}), then ${parts[1]?.[0]} (${pct(Number(parts[1]?.[1]) / total)}). ` +
        (Number.isFinite(bigS) && biggest !== undefined
          ? `The largest layer (${mb(biggest.tarBytes)} MB of tar) takes ${fx(bigS)} s from its start to its blob ` +
            `(${fx(biggest.tarBytes / 1e6 / bigS, 1)} MB/s of tar, one stream: gunzip, tar parsing, chunking, ` +
            'hashing and compression of one layer), so the longest layer bounds the conversion. '
          : '') +
        'Convert also pushes the Nydus image to the registry, which the floor does not.',
    );
  }
  L.push(...out, '');
  return L;
}
