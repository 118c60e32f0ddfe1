import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

/** Project root: tests run compiled from dist/test/..., sources live in test/... */
export const PROJECT_ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('Cannot find the project root');
    dir = up;
  }
  return dir;
})();

/**
 * Where the upstream fixtures are: $NYDUS_UPSTREAM_FIXTURES, else ../shared/fixtures/nydus-upstream
 * beside the project. They are never copied into the project.
 */
export const UPSTREAM_FIXTURES =
  process.env['NYDUS_UPSTREAM_FIXTURES'] ??
  resolve(PROJECT_ROOT, '..', 'shared', 'fixtures', 'nydus-upstream');

export const IN_CI = process.env['CI'] === 'true';

/**
 * Path of an upstream fixture. When it is absent the test is skipped with a loud reason, except
 * under CI=true, where absence fails the test.
 */
export function upstreamFixture(t: TestContext, rel: string): string | undefined {
  const p = join(UPSTREAM_FIXTURES, rel);
  if (existsSync(p)) return p;
  const why = `upstream fixture ${p} is missing (set NYDUS_UPSTREAM_FIXTURES)`;
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return undefined;
}

export function readUpstreamFixture(t: TestContext, rel: string): Buffer | undefined {
  const p = upstreamFixture(t, rel);
  return p === undefined ? undefined : readFileSync(p);
}

export const FIXTURE = {
  v5Sha256: 'repeatable/sha256-nocompress-repeatable',
  v5Blake3: 'repeatable/blake3-lz4_block-non_repeatable',
  v5Result: 'repeatable/sha256-nocompress-repeatable.result',
  v5BlobDir: 'repeatable/blobs',
  v5Blob: 'repeatable/blobs/7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00',
  lz4Blob: 'repeatable/blobs/d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac',
  v6Boot: 'bootstrap/rafs-v6-2.2.boot',
  v6BlobDir: 'blobs',
  v6Blob: 'blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef',
  allEntryTar: 'tar/all-entry-type.tar',
  emptyTar: 'tar/empty.tar',
} as const;
