import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { TestContext } from 'node:test';
import { IN_CI, PROJECT_ROOT } from '../../helpers/fixtures.js';

/**
 * The seed documents users arrive with (upstream tutorial, README, containerd guide, nydusd
 * guide): $NYDUS_SEEDS, else ../shared/seeds beside the project. They are read in place, never
 * copied into the project.
 */
export const SEEDS_DIR = process.env['NYDUS_SEEDS'] ?? resolve(PROJECT_ROOT, '..', 'shared', 'seeds');

export interface SeedDoc {
  file: string;
  text: string;
}

/** Every seed document, or undefined (test skipped loudly; a failure under CI=true). */
export function readSeedDocs(t: TestContext): SeedDoc[] | undefined {
  const files = existsSync(SEEDS_DIR) ? readdirSync(SEEDS_DIR).filter((f) => /^\d+_.*\.txt$/.test(f)) : [];
  if (files.length > 0) {
    return files.sort().map((file) => ({ file, text: readFileSync(join(SEEDS_DIR, file), 'utf8') }));
  }
  const why = `seed documents are missing from ${SEEDS_DIR} (set NYDUS_SEEDS)`;
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return undefined;
}

export interface SeedConfig {
  /** `<seed file>#<n>`, n counting the configs of that file from 1. */
  id: string;
  /** The config text exactly as the document shows it. */
  text: string;
}

/**
 * The nydusd configs a seed document shows: every block that opens with a `{` line and closes
 * with a `}` line at column 0 and mentions `"device"` or `"version"`, then every JSON config
 * passed as the `config` string of a mount API call (`"config":"{\"device\":...}"`).
 */
export function extractSeedConfigs(doc: SeedDoc): SeedConfig[] {
  const out: SeedConfig[] = [];
  const lines = doc.text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]?.trimEnd() !== '{') continue;
    let j = i + 1;
    while (j < lines.length && lines[j]?.trimEnd() !== '}') j++;
    const block = lines.slice(i, j + 1).join('\n');
    if (block.includes('"device"') || block.includes('"version"')) {
      out.push({ id: `${doc.file}#${out.length + 1}`, text: block });
    }
    i = j;
  }
  for (const m of doc.text.matchAll(/"config":"(\{(?:[^"\\]|\\.)*)"/g)) {
    out.push({ id: `${doc.file}#${out.length + 1}`, text: JSON.parse(`"${m[1] ?? ''}"`) as string });
  }
  return out;
}

/**
 * The documents elide parts with `...` (a line of its own, or `"type": "..."` for "any
 * backend"). A user fills those in; this does the least filling that makes the text a config:
 * the elision lines go, and "any backend" becomes the registry.
 */
export function fillElisions(text: string): string {
  return text
    .split('\n')
    .filter((l) => !/^\s*\.\.\.,?\s*$/.test(l))
    .join('\n')
    .replace('"type": "..."', '"type": "registry"');
}
