// Formatting shared by the parts of BENCHMARKS.md (report.mjs for B1, report-mount.mjs for B2,
// B3 and B6, report-registry.mjs for B4, B5 and B7, report-containerd.mjs for B8).

/** @param {number} x @param {number} [d] */
export const fx = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
/** @param {number} x */
export const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
/** @param {number} x */
export const pct = (x) => `${fx(x * 100, 0)}%`;
/** @param {number} n @param {string} what */
export const plural = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;
/** Bytes in MB (10^6). @param {number} b */
export const mb = (b) => fx(b / 1e6, 1);
/** Whether a bar is met, in bold. @param {boolean} ok */
export const verdict = (ok) => (ok ? '**met**' : '**missed**');

/** The median of the finite numbers of `xs` (NaN when there are none). @param {number[]} xs */
export function med(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
}

/** "min-max" of the finite numbers of `xs`, each formatted by `f`. @param {number[]} xs @param {(x: number) => string} [f] */
export const range = (xs, f = (x) => fx(x)) => {
  const s = xs.filter((x) => Number.isFinite(x));
  return s.length === 0 ? 'n/a' : `${f(Math.min(...s))}-${f(Math.max(...s))}`;
};

/** A Markdown table, `|` inside cells escaped. @param {string[][]} rows */
export const md = (rows) =>
  rows.map((row) => `| ${row.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`).join('\n');

/**
 * The mode of a run as the report names it ('full' for runs saved before there were modes).
 * @param {{ config: { mode?: string } }} o
 */
export const modeOf = (o) => (o.config.mode === 'quick' ? 'quick' : 'full');

/**
 * The sentence that says which mode produced a part ('' for runs saved before there were modes).
 * @param {{ config: { mode?: string } }} o
 */
export function modeText(o) {
  if (o.config.mode === undefined) return '';
  return modeOf(o) === 'quick'
    ? '**Quick mode** (`npm run bench:quick`: the small data sets, fewer rounds; for everyday comparisons, not the result of record).'
    : 'Full mode (`npm run bench`: the data set sizes of `../shared/docs/benchmarks.md`).';
}

/**
 * The lines that open a part of the report: its title, when, at which commit and in which mode
 * it was measured, a warning when the run had fewer rounds than the rules ask, and the heading
 * of its "How it was produced" list.
 * @param {string} title
 * @param {{ date: string, machine: { commit: string, cpu?: string }, config: { rounds: number, mode?: string },
 *   roundsNote?: string }} o
 * @returns {string[]}
 */
export function partHeading(title, o) {
  const L = [
    `## ${title}`,
    '',
    `Measured on ${o.date} (nydus-ts commit ${o.machine.commit}${o.machine.cpu ? `, CPU ${o.machine.cpu}` : ''}). ${modeText(o)}`,
    '',
  ];
  if (o.roundsNote !== undefined) L.push(`> ${o.roundsNote}`, '');
  else if (modeOf(o) === 'quick') {
    if (o.config.rounds < 3)
      L.push(`> **Trial run: ${o.config.rounds} round(s) per tool.** These numbers are not a result.`, '');
  } else if (o.config.rounds < 5) {
    L.push(
      `> **Trial run: ${o.config.rounds} round(s) per tool, fewer than the 5 the rules ask for.** ` +
        'These numbers are not a result.',
      '',
    );
  }
  L.push('### How it was produced', '');
  return L;
}

/**
 * The CPU as /proc/cpuinfo names it: model name, clock and the flags that matter to the
 * encoders and hashes (sha_ni, avx2, avx512f).
 * @param {{ cpu: string, cpuMHz?: string | number, cpuHints?: string[] }} m
 */
export function cpuText(m) {
  const flags =
    m.cpuHints === undefined ? '' : `; flags: ${m.cpuHints.join(', ') || 'none of sha_ni, avx2, avx512f'}`;
  return `${m.cpu}${m.cpuMHz ? ` (${m.cpuMHz} MHz)` : ''}${flags}`;
}

/**
 * The "Machine" section of a part measured on a machine as run.mjs describes it: CPU (model
 * name, clock, flags), cores and memory, kernel, Node.js and the commit, then `more` rows (the
 * versions of what the part drives).
 * @param {{ cpu: string, cpuMHz?: string | number, cpuHints?: string[], nproc: string | number, memGiB: number,
 *   kernel: string, node: string, commit: string }} m
 * @param {string[][]} more
 * @returns {string[]}
 */
export function machineSection(m, more) {
  const rows = [
    ['CPU', cpuText(m)],
    ['cores, memory', `${m.nproc}, ${fx(m.memGiB, 1)} GiB`],
    ['kernel', m.kernel],
    ['Node.js', m.node],
    ['nydus-ts', `commit ${m.commit}`],
    ...more,
  ];
  return [
    '### Machine',
    '',
    '| what | value |',
    '| --- | --- |',
    ...rows.map(([k, x]) => `| ${k} | ${x} |`),
    '',
  ];
}

/**
 * The table of a start over the shared link (B4, B8), ours against the peer: the median seconds
 * to the first output and their range, the steps, the bytes over the link, the CPU time the
 * machine used (`cpu` of a run), and peer/ours against the bar.
 * @template {{ first: number, linkDown: number }} R
 * @param {number} bar
 * @param {(run: R) => number} cpu
 * @param {{ name: string, runs: R[], steps: string }} ours
 * @param {{ name: string, runs: R[], steps: string }} peer
 */
export function startTable(bar, cpu, ours, peer) {
  const head = [
    'tool',
    'median s to first output',
    'min-max s',
    'steps (median s)',
    'bytes over the link',
    'machine CPU s',
    `peer/ours (bar ≥ ${bar})`,
  ];
  const first = (/** @type {R[]} */ runs) => runs.map((x) => x.first);
  const row = (/** @type {{ name: string, runs: R[], steps: string }} */ s, /** @type {string} */ ratio) => [
    s.name,
    fx(med(first(s.runs))),
    range(first(s.runs)),
    s.steps,
    int(med(s.runs.map((x) => x.linkDown))),
    fx(med(s.runs.map(cpu))),
    ratio,
  ];
  return md([
    head,
    head.map(() => '---'),
    row(ours, fx(med(first(peer.runs)) / med(first(ours.runs)))),
    row(peer, '-'),
  ]);
}
