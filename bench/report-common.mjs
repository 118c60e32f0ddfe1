// Formatting shared by the parts of BENCHMARKS.md (report.mjs for B1, report-mount.mjs for B2,
// B3 and B6).

/** @param {number} x @param {number} [d] */
export const fx = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
/** @param {number} x */
export const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
/** @param {number} x */
export const pct = (x) => `${fx(x * 100, 0)}%`;
/** @param {number} n @param {string} what */
export const plural = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;

/** A Markdown table, `|` inside cells escaped. @param {string[][]} rows */
export const md = (rows) =>
  rows.map((row) => `| ${row.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`).join('\n');

/**
 * The lines that open a part of the report: its title, when and at which commit it was
 * measured, a warning when the run had fewer rounds than the rules ask, and the heading of its
 * "How it was produced" list.
 * @param {string} title
 * @param {{ date: string, machine: { commit: string }, config: { rounds: number } }} o
 * @returns {string[]}
 */
export function partHeading(title, o) {
  const L = [`## ${title}`, '', `Measured on ${o.date} (nydus-ts commit ${o.machine.commit}).`, ''];
  if (o.config.rounds < 5) {
    L.push(
      `> **Trial run: ${o.config.rounds} round(s) per tool, fewer than the 5 the rules ask for.** ` +
        'These numbers are not a result.',
      '',
    );
  }
  L.push('### How it was produced', '');
  return L;
}
