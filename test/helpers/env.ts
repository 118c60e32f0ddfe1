import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { IN_CI } from './fixtures.js';

export const IS_ROOT = process.getuid?.() === 0;

/**
 * Tests that need root (mknod, chown, mounts, trusted xattrs) run in CI, where we are root.
 * Without root they skip with a loud reason; under CI=true a missing root is a failure.
 */
export function needRoot(t: TestContext, what = 'this test'): boolean {
  if (IS_ROOT) return true;
  const why = `${what} needs root`;
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return false;
}

/** Extract a tar with GNU tar as root, keeping owners, modes, xattrs and times. */
export function extractTar(tarFile: string, into: string): void {
  mkdirSync(into, { recursive: true });
  execFileSync('tar', [
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '--same-owner',
    '-p',
    '-xf',
    tarFile,
    '-C',
    into,
  ]);
}
