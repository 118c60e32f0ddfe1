import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { IN_CI } from './fixtures.js';
import { IS_ROOT } from './fs-tree.js';

/** Where the test rootfs lives: $NYDUS_TEST_ROOTFS, else a cache under /var/tmp made once. */
export const ROOTFS_DIR = process.env['NYDUS_TEST_ROOTFS'] ?? '/var/tmp/nydus-test-rootfs/bookworm';
const DONE = `${ROOTFS_DIR}.complete`;

/**
 * A real Debian rootfs (`debootstrap --variant=minbase bookworm`), made on first use (a few
 * minutes) and reused afterwards. Needs root and the debootstrap package; without them the test
 * skips loudly, and under CI=true that is a failure.
 */
export function debianRootfs(t: TestContext): string | undefined {
  const skip = (why: string): undefined => {
    if (IN_CI) throw new Error(`${why}; under CI=true that is a failure`);
    process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
    t.skip(why);
    return undefined;
  };
  if (existsSync(DONE)) return ROOTFS_DIR;
  if (!IS_ROOT) return skip('making a debootstrap rootfs needs root');
  try {
    execFileSync('sh', ['-c', 'command -v debootstrap'], { stdio: 'ignore' });
  } catch {
    return skip('debootstrap is not installed (apt-get install debootstrap)');
  }
  rmSync(ROOTFS_DIR, { recursive: true, force: true });
  mkdirSync(ROOTFS_DIR, { recursive: true });
  execFileSync('debootstrap', ['--variant=minbase', 'bookworm', ROOTFS_DIR], {
    stdio: ['ignore', 'ignore', 'inherit'],
    timeout: 20 * 60 * 1000,
  });
  writeFileSync(DONE, new Date().toISOString());
  return ROOTFS_DIR;
}
