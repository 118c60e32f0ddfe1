// The B9 part of BENCHMARKS.md (cold reads through each remote backend against localfs), from the
// measurements of one run of remote.mjs. Every number and sentence comes from those measurements.
import { fx, int, machineSection, md, partHeading } from './report-common.mjs';

/**
 * @typedef {{
 *   kind: 'remote',
 *   command: string,
 *   config: { work: string, rounds: number, only: string[] },
 *   date: string,
 *   machine: ReturnType<typeof import('./run.mjs').machine> & { remoteVersions: Record<string, string> },
 *   totalSeconds: number,
 *   result: Awaited<ReturnType<typeof import('./remote.mjs').benchRemote>>,
 * }} RemoteInput
 */

/**
 * @param {RemoteInput} o
 * @returns {string[]}
 */
export function renderRemote(o) {
  const r = o.result;
  const L = partHeading('B9: cold reads through the remote backends', o);
  L.push(
    `- Command: \`${o.command}\` with \`NYDUS_BENCH_ONLY=b9\` (\`bench/remote.mjs\`); work directory ` +
      `\`${o.config.work}\` (servers, configs and nydusd logs under \`remote/\`).`,
    `- Image: ${r.image}, ${r.blobs === 1 ? 'one data blob' : `${r.blobs} data blobs`} of ` +
      `${int(r.blobBytes)} bytes, served by every backend from the same bytes: pushed to Debian's ` +
      '`docker-registry`, put into an `s3rver` bucket (read by both the `s3` and the `oss` backend, ' +
      'path-style URLs on loopback), and served as files by `nginx` (the `http-proxy` backend); the ' +
      'P2P proxy is `nginx` as a caching forward proxy in front of the registry (`proxy.url`, ' +
      '`fallback: false`): "uncached" empties its cache first, "cached" is the run right after it.',
    '- Each run: one nydusd mounts the bootstrap with that backend (v2 config, `dummycache`: no ' +
      'blob cache), page cache dropped, then `tar -cf - . | wc -c` in the mountpoint reads every ' +
      `file once. ${o.config.rounds} rounds, each running every variant once in its own shuffled order ` +
      '(seeded by the round, as in B1; "cached" always right after "uncached"); medians.',
    '',
    '### Result',
    '',
  );
  const peer = r.results.find((x) => x.kind === 'peer');
  const base = peer?.median?.wall ?? NaN;
  const rows = [
    [
      'backend',
      'median s',
      'min-max s',
      'ours/localfs',
      'bytes tar read',
      'nydusd CPU s',
      'nydusd peak RSS MiB',
    ],
    ['---', '---', '---', '---', '---', '---', '---'],
    ...r.results.map((x) =>
      x.median === undefined
        ? [x.label, 'failed', '', '', '', '', x.failed ?? '']
        : [
            x.label,
            fx(x.median.wall),
            `${fx(x.median.min)}-${fx(x.median.max)}`,
            x.kind === 'peer' ? '1.00 (peer)' : fx(x.median.wall / base),
            int(x.median.bytes),
            fx(x.median.daemonCpu),
            fx(x.median.hwmKiB / 1024, 0),
          ],
    ),
  ];
  L.push(md(rows), '');
  const remote = r.results.filter((x) => x.kind === 'ours' && x.median !== undefined);
  if (remote.length > 0 && Number.isFinite(base)) {
    const worst = remote.reduce((a, b) => ((a.median?.wall ?? 0) > (b.median?.wall ?? 0) ? a : b));
    L.push(
      `The network path costs at most ${fx((worst.median?.wall ?? NaN) / base)}x the local read ` +
        `(${worst.label}); the bar of \`docs/benchmarks.md\` for B9 is this comparison itself, no ratio.`,
      '',
    );
  }
  const failed = r.results.filter((x) => x.failed !== undefined);
  if (failed.length > 0) L.push(`Failed: ${failed.map((x) => `${x.label}: ${x.failed}`).join('; ')}.`, '');
  L.push(
    ...machineSection(
      o.machine,
      Object.entries(o.machine.remoteVersions).map(([k, v]) => [k, v]),
    ),
  );
  return L;
}
