// The B8 part of BENCHMARKS.md (container start through containerd, and the snapshotter's memory
// figures), from the measurements of one run of containerd.mjs. As in the other parts, every
// number and sentence comes from those measurements.
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

/** The bar of ../shared/docs/benchmarks.md: B8 ≥ 10x; B6 per extra image ≤ 8 MiB + bootstrap. */
export const CONTAINERD_BAR = { b8: 10, perImageMiB: 8 };

/**
 * @typedef {{
 *   kind: 'containerd',
 *   command: string,
 *   config: { work: string, rounds: number, only: string[] },
 *   date: string,
 *   machine: ReturnType<typeof import('./run.mjs').machine>,
 *   load: { before: string, after: string },
 *   benchSeconds: number,
 *   totalSeconds: number,
 *   result: Awaited<ReturnType<typeof import('./containerd.mjs').benchContainerd>>,
 * }} ContainerdInput
 */

/** @param {number} kib */
const mib = (kib) => fx(kib / 1024, 1);

/**
 * @param {ContainerdInput} o
 * @returns {string[]}
 */
export function renderContainerd(o) {
  const r = o.result;
  const m = o.machine;
  const v = r.versions;
  const L = partHeading('B8: container start through containerd', o);
  const ds = r.dataSet;
  const treeBytes = ds.stats?.bytes ?? NaN;
  const memRounds = r.memory.rounds;
  const images = memRounds[0]?.steps.length ?? 0;
  L.push(
    `- Command: \`${o.command}\` with \`NYDUS_BENCH_ONLY=b8\` (\`bench/containerd.mjs\`); work directory ` +
      `\`${o.config.work}\` (containerd, snapshotter and registry state under \`containerd/\`, removed ` +
      'after every run; the logs of every run in `containerd/logs/`).',
    `- Data set **${ds.name}**, as in B4: ${ds.description} ${int(ds.stats?.files ?? NaN)} regular files, ` +
      `${int(treeBytes)} bytes of files. Its OCI image: ${plural(r.image.layers.length, 'gzip layer')}, ` +
      `${int(r.image.compressedBytes)} bytes compressed. The Nydus image: \`nydusify convert --source ` +
      'REG/rootfs:oci --target REG/rootfs-nydus:nydus --plain-http` (RAFS v6, zstd, 1 MiB chunks), its ' +
      `bootstrap ${int(r.converted.bootstrapBytes)} bytes.`,
    `- Registry: Debian \`docker-registry\` ${v.dockerRegistry} on 127.0.0.1 (plain HTTP), started afresh, ` +
      'both images pushed by the run. `bench/link.mjs` (a token bucket of 100 Mbit/s per direction shared ' +
      'by all connections, in its own process) sits in front of it; in B8 every pull (containerd and ' +
      "nydusd alike) reaches the registry only through the link's address.",
    `- **Ours**: containerd ${v.containerd} (CRI plugin off) with \`[proxy_plugins.nydus]\` on the socket of ` +
      "`containerd-nydus-grpc` (this project's, compiled from src/ at the start of the run; dedicated " +
      'mode, `cleanup_on_close = true`, nydusd config template: registry backend over HTTP, blob cache, ' +
      'prefetch off). Timed: `ctr-remote image rpull --plain-http --snapshotter nydus LINK/rootfs-nydus:nydus` ' +
      `(ctr-remote from stargz-snapshotter ${v.stargzSnapshotter}: only the manifest, config and bootstrap ` +
      'layer are fetched; the snapshotter commits the data layers without content) then `ctr run ' +
      `--snapshotter nydus --rm LINK/rootfs-nydus:nydus ID /bin/sh -c "${r.cmd}"\` (runc ${v.runc}; the ` +
      'snapshotter starts nydusd for the image when the container is prepared).',
    '- **Peer**: the same containerd with its default overlayfs snapshotter. Timed: `ctr image pull --plain-http LINK/rootfs:oci` (fetches every layer, then unpacks them; the split between ' +
      'the two is the first "unpacking" line it prints) then `ctr run --rm LINK/rootfs:oci ID /bin/sh -c ' +
      `"${r.cmd}"\`.`,
    '- The time is from the start of the pull to the first byte `ctr run` prints (monotonic clock); ' +
      "where ours' `ctr run` time goes comes from the timestamps of the snapshotter's and nydusd's logs. " +
      "containerd and the snapshotter are daemons: their start is not counted (the node's daemons " +
      'are up before any pull), it is done before the clock starts.',
    `- Cold state: every run has a new containerd root and state directory (empty content store, no ` +
      'snapshots, no images) and, for ours, a new snapshotter root (no blob cache, no nydusd); after the ' +
      'daemons are up, `sync; echo 3 > /proc/sys/vm/drop_caches`; after the run containerd, the shims, ' +
      'the snapshotter and nydusd are stopped, every mount under the run directory is unmounted and the ' +
      `directory removed. ${o.config.rounds} round${o.config.rounds === 1 ? '' : 's'}; in each, ours and ` +
      'the peer run once, and who goes first swaps every round. Tables give the median and the range.',
    "- Bytes: after the command of ours, nydusd's API socket (`<root>/socket/<id>/api.sock`) gives the " +
      "backend's `read_amount_total` (bytes fetched from the registry, compressed) and the file " +
      "system's `data_read` (bytes read through the mount); the link counts every byte it carried to " +
      'the client.',
    "- Memory during B8: `VmHWM` (peak resident set) from `/proc/PID/status` of the snapshotter's process " +
      'and of the nydusd it started, read after the command of every run of ours (the snapshotter started ' +
      'just before the pull, so its peak covers its start, the pull and the container).',
    `- Memory per image (shared mode): a new containerd and \`containerd-nydus-grpc --daemon-mode shared\`; ` +
      `${images} Nydus images, each the rootfs-large OCI image plus one small layer of its own (a file ` +
      '`/etc/nydus-bench-image` naming it), converted one by one: their bootstraps differ, so each is a ' +
      'separate instance of the one nydusd, while their three big data blobs are the same (images ' +
      'sharing their base layers). In turn: `ctr-remote image rpull` of image N (straight from the ' +
      'registry, no link: only memory is measured here) and `ctr run --snapshotter nydus --rm` of ' +
      `\`cat /etc/nydus-bench-image; ${r.cmd}\`; 1 s later the shared nydusd's \`VmRSS\` (median of 5 ` +
      `samples over 1 s: its JavaScript heap moves). ${plural(memRounds.length, 'sequence')} (one per ` +
      'round, each from nothing, after the B8 rounds); medians per N.',
    `- Load: the machine is shared with other work (load average ${o.load.before} at the start, ` +
      `${o.load.after} at the end); before every run the harness waits (at most 20 s) for under 10% of a ` +
      `core busy (${fx(r.quietWaited, 0)} s waited in all). "machine CPU s" is the CPU time the whole ` +
      'machine used during a run (containerd, the snapshotter, nydusd, the registry, the link, the ' +
      'container and everything else).',
    `- Run time ${fx(o.benchSeconds / 60, 1)} min (of which ${fx(r.setupSeconds / 60, 1)} min pushing and ` +
      `converting the images), ${fx(o.totalSeconds / 60, 1)} min in all.`,
    '',
  );

  L.push(
    ...machineSection(m, [
      [
        'containerd, runc, ctr-remote (stargz-snapshotter)',
        `Debian ${v.containerd}, ${v.runc}, ${v.stargzSnapshotter}`,
      ],
      ['docker-registry, skopeo', `Debian ${v.dockerRegistry}, ${v.skopeo}`],
    ]),
  );

  // ---------------------------------------------------------------- B8
  L.push('### B8: container start over a shared 100 Mbit/s link', '');
  const ours = r.b8.ours;
  const peer = r.b8.peer;
  const oursFirst = med(ours.map((x) => x.first));
  const peerFirst = med(peer.map((x) => x.first));
  const ratio = peerFirst / oursFirst;
  // The least favourable pairing of the rounds: our slowest against the peer's fastest.
  const worst = Math.min(...peer.map((x) => x.first)) / Math.max(...ours.map((x) => x.first));
  const st = (/** @type {any[]} */ runs, /** @type {string} */ k) => med(runs.map((x) => x.steps[k] ?? NaN));
  if (ours.length === 0 || peer.length === 0) {
    L.push(`Not measured: ${r.b8.failed ?? 'no runs'}.`, '');
  } else {
    L.push(
      startTable(
        CONTAINERD_BAR.b8,
        (x) => x.machineCpu,
        {
          name: '**containerd + containerd-nydus-grpc: ctr-remote image rpull + ctr run**',
          runs: ours,
          steps:
            `rpull ${fx(st(ours, 'pull'))}, then ctr run to the first output ${fx(st(ours, 'run'))} ` +
            `(until the snapshotter starts nydusd ${fx(st(ours, 'untilNydusd'))}, nydusd's start ` +
            `${fx(st(ours, 'nydusdStart'))}, overlay mount + runc + the command ${fx(st(ours, 'afterNydusd'))})`,
        },
        {
          name: 'containerd + overlayfs: ctr image pull + ctr run',
          runs: peer,
          steps:
            `pull ${fx(st(peer, 'pull'))} (fetch ${fx(st(peer, 'fetch'))}, unpack ${fx(st(peer, 'unpack'))}), ` +
            `then ctr run to the first output ${fx(st(peer, 'run'))}`,
        },
      ),
      '',
    );
    const same = [...ours, ...peer].every((x) => x.output === ours[0]?.output);
    L.push(
      `The command printed "${ours[0]?.output ?? ''}" in every run ${same ? 'of ours and of the peer' : '(**the outputs differ between runs!**)'}.` +
        `${r.b8.failed !== undefined ? ` **Some runs failed**: ${r.b8.failed}` : ''}`,
      '',
    );
  }

  // ---------------------------------------------------------------- bytes
  L.push('### Bytes fetched for B8', '');
  const f = ours.map((x) => x.fetched).filter((x) => x !== undefined);
  const be = med(f.map((x) => x.readAmountTotal));
  const read = med(f.map((x) => x.dataRead));
  const linkOurs = med(ours.map((x) => x.linkDown));
  const linkPeer = med(peer.map((x) => x.linkDown));
  if (f.length > 0) {
    const rows = [
      ['what', 'bytes (median)', 'of the tree', 'of the compressed OCI image'],
      ['---', '---', '---', '---'],
    ];
    const add = (/** @type {string} */ what, /** @type {number} */ b) =>
      rows.push([
        what,
        int(b),
        `${fx((b / treeBytes) * 100, 1)}%`,
        `${fx((b / r.image.compressedBytes) * 100, 1)}%`,
      ]);
    add('`data_read`: what the container read through the mount', read);
    add('`read_amount_total`: fetched from the registry by nydusd (compressed chunks)', be);
    add('ours: all bytes the link carried to the client (rpull and nydusd)', linkOurs);
    add('the peer: all bytes the link carried (full pull)', linkPeer);
    L.push(md(rows), '');
    L.push(
      `nydusd processes per run: ${range(
        f.map((x) => x.daemons),
        (x) => String(x),
      )}; backend requests ${int(med(f.map((x) => x.readCount)))} (median), errors ` +
        `${int(Math.max(...f.map((x) => x.readErrors)))}. Fetched / read = ${fx(be / read)}.`,
      '',
    );
  } else L.push('Not measured (no run of ours).', '');

  // ---------------------------------------------------------------- memory
  L.push('### Memory: the snapshotter and nydusd', '');
  const mem = ours.map((x) => x.memory).filter((x) => x !== undefined);
  if (mem.length > 0) {
    const rows = [
      [
        'process (during B8, dedicated mode)',
        'peak RSS (VmHWM) MiB, median',
        'min-max MiB',
        'RSS after the run MiB',
      ],
      ['---', '---', '---', '---'],
      [
        'containerd-nydus-grpc',
        mib(med(mem.map((x) => x.snapshotterHwmKiB))),
        range(
          mem.map((x) => x.snapshotterHwmKiB),
          mib,
        ),
        mib(med(mem.map((x) => x.snapshotterRssKiB))),
      ],
      [
        'nydusd (one, for the image)',
        mib(med(mem.map((x) => x.nydusdHwmKiB))),
        range(
          mem.map((x) => x.nydusdHwmKiB),
          mib,
        ),
        mib(med(mem.map((x) => x.nydusdRssKiB))),
      ],
    ];
    L.push(md(rows), '');
  }
  /** Median over the sequences of the RSS with N images. @param {number} n */
  const rssAt = (n) => med(memRounds.map((s) => s.steps[n - 1]?.nydusdRssKiB ?? NaN));
  const boot = med(r.memory.bootstrapBytes);
  if (memRounds.length > 0 && images > 0) {
    const rows = [
      [
        'images (instances of the shared nydusd)',
        'nydusd RSS MiB (median)',
        'min-max MiB',
        'more than with one image less, MiB',
        'nydusd VmHWM MiB',
        'snapshotter RSS MiB',
      ],
    ];
    rows.push(rows[0]?.map(() => '---') ?? []);
    for (let n = 1; n <= images; n++) {
      const inst = memRounds.map((s) => s.steps[n - 1]?.instances ?? NaN);
      rows.push([
        `${n} (instances seen: ${range(inst, (x) => String(x))})`,
        mib(rssAt(n)),
        range(
          memRounds.map((s) => s.steps[n - 1]?.nydusdRssKiB ?? NaN),
          mib,
        ),
        n === 1 ? '-' : mib(rssAt(n) - rssAt(n - 1)),
        mib(med(memRounds.map((s) => s.steps[n - 1]?.nydusdHwmKiB ?? NaN))),
        mib(med(memRounds.map((s) => s.steps[n - 1]?.snapshotterRssKiB ?? NaN))),
      ]);
    }
    L.push(md(rows), '');
    L.push(
      `Each image's bootstrap is ${int(boot)} bytes (${mib(boot / 1024)} MiB). ` +
        `${r.memory.failed !== undefined ? `**Some sequences failed**: ${r.memory.failed}` : ''}`,
      '',
    );
  } else L.push(`Shared mode not measured: ${r.memory.failed ?? 'no runs'}.`, '');

  // ---------------------------------------------------------------- findings
  const stops = [...ours.map((x) => x.stopped), ...memRounds.map((s) => s.stopped)].filter(
    (x) => x !== undefined,
  );
  const unclean = stops.filter((s) => s.leftNydusd > 0 || s.leftMounts > 0 || s.code !== 0);
  const said = [
    ...new Set([...ours.flatMap((x) => x.complaints ?? []), ...memRounds.flatMap((s) => s.complaints)]),
  ];
  L.push('### What the snapshotter did besides', '');
  L.push(
    `- Stopped with SIGTERM after each of its ${stops.length} runs: ` +
      (unclean.length === 0
        ? 'every time it exited with 0 and left no nydusd and no mount behind (`cleanup_on_close`).'
        : `${unclean.length} time(s) it exited otherwise or left something behind: ` +
          unclean
            .map((s) => `exit ${s.code ?? s.signal}, ${s.leftNydusd} nydusd, ${s.leftMounts} mounts left`)
            .join('; ') +
          ' (the harness killed and unmounted what was left).'),
    said.length === 0
      ? '- It logged no warning and no error.'
      : `- It logged ${plural(said.length, 'distinct warning or error line')} (timestamps included, so the same ` +
          `message may count more than once); the first: ${said
            .slice(0, 3)
            .map((l) => `\`${l.slice(0, 300)}\``)
            .join('; ')}.`,
    '',
  );

  // ---------------------------------------------------------------- Reading
  L.push('### Reading', '');
  const out = [];
  if (Number.isFinite(ratio)) {
    const readShare = read / treeBytes;
    out.push(
      `- **B8**: from the pull to the first output, ours takes ${fx(oursFirst)} s and the full pull + unpack ` +
        `+ run ${fx(peerFirst)} s: **${fx(ratio, 1)}x** faster, the bar (≥ ${CONTAINERD_BAR.b8}x) is ` +
        `${verdict(ratio >= CONTAINERD_BAR.b8)}. With the least favourable pairing of the rounds (our slowest ` +
        `run against the peer's fastest) it is still ${fx(worst, 1)}x` +
        `${worst >= CONTAINERD_BAR.b8 ? ', above the bar' : ', **below the bar**'}. The container read ` +
        `${pct(readShare)} of the tree's bytes (${readShare < 0.1 ? 'under' : '**not** under'} the 10% the ` +
        `bar is about). Of ours, ${fx(st(ours, 'pull'))} s go to \`rpull\` and ${fx(st(ours, 'run'))} s to ` +
        `\`ctr run\` until the first output: ${fx(st(ours, 'untilNydusd'))} s until the snapshotter starts ` +
        `nydusd (containerd preparing the container's snapshot), ${fx(st(ours, 'nydusdStart'))} s nydusd's ` +
        `start (a Node.js process) until it serves the image, ${fx(st(ours, 'afterNydusd'))} s for the overlay ` +
        'mount, runc and the command, whose files are fetched on demand over the link. Of the peer, ' +
        `${fx(st(peer, 'fetch'))} s go to fetching ${mb(linkPeer)} MB (the link alone needs ` +
        `${fx(linkPeer / 12.5e6)} s for that), ${fx(st(peer, 'unpack'))} s to unpacking and ` +
        `${fx(st(peer, 'run'))} s to \`ctr run\`.`,
    );
  }
  if (mem.length > 0) {
    out.push(
      `- **Memory during B8**: the snapshotter peaked at ${mib(med(mem.map((x) => x.snapshotterHwmKiB)))} MiB ` +
        `(at most ${mib(Math.max(...mem.map((x) => x.snapshotterHwmKiB)))} MiB in any run), the nydusd of the ` +
        `image at ${mib(med(mem.map((x) => x.nydusdHwmKiB)))} MiB (at most ` +
        `${mib(Math.max(...mem.map((x) => x.nydusdHwmKiB)))} MiB).`,
    );
  }
  if (memRounds.length > 0 && images > 1) {
    const incs = [];
    for (let n = 2; n <= images; n++) incs.push(rssAt(n) - rssAt(n - 1));
    const mean = (rssAt(images) - rssAt(1)) / (images - 1);
    const limitKiB = CONTAINERD_BAR.perImageMiB * 1024 + boot / 1024;
    const maxInc = Math.max(...incs);
    out.push(
      `- **Memory per image (shared mode)**: one image in the shared nydusd takes it to ${mib(rssAt(1))} MiB; ` +
        `each further image adds ${incs.map(mib).join(', ')} MiB (median RSS with N images minus with N - 1), ` +
        `${mib(mean)} MiB per image on average from 1 to ${images}. The bar of B6 (≤ ${CONTAINERD_BAR.perImageMiB} ` +
        `MiB per extra image plus its ${mib(boot / 1024)} MiB bootstrap, ${mib(limitKiB)} MiB) is ` +
        `${verdict(maxInc <= limitKiB)} by the largest single step (${mib(maxInc)} MiB)` +
        `${maxInc <= limitKiB ? ` with ${mib(limitKiB - maxInc)} MiB to spare` : ''}.`,
    );
  }
  L.push(...out, '');
  return L;
}
