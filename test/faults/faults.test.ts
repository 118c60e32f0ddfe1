import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IN_CI } from '../helpers/fixtures.js';
import { canFuse } from '../helpers/nydusd.js';
import {
  buildFaultImage,
  FAULT_BACKENDS,
  FAULT_CASES,
  READER_BOUND_MS,
  resultLine,
  runBackendFaults,
  type FaultImage,
  type FaultResult,
} from './harness.js';

/**
 * The fault suite: for every network backend (registry via docker-registry, s3 and oss via
 * s3rver behind the signature-checking front, http-proxy via nginx serving the blob directory),
 * the fault proxy between nydusd and the server, and for every fault (reset mid-body, stall,
 * 5xx burst, 429, truncated body, slow trickle, flipped byte) 16 readers hashing every file of
 * the mounted image while the fault is on. Every read gives the right bytes or EIO, never wrong
 * bytes; no reader hangs; once the fault is off every file reads right on the same mount.
 *
 * NYDUS_FAULTS_BACKENDS / NYDUS_FAULTS_ONLY (comma-separated names) narrow the matrix for a quick
 * look; bench/faults.mjs runs the same harness and writes the matrix into BENCHMARKS.md.
 */

const pick = (env: string | undefined): Set<string> | undefined =>
  env === undefined || env === '' ? undefined : new Set(env.split(',').map((s) => s.trim()));
const onlyBackends = pick(process.env['NYDUS_FAULTS_BACKENDS']);
const onlyFaults = pick(process.env['NYDUS_FAULTS_ONLY']);
const faults = FAULT_CASES.filter((f) => onlyFaults === undefined || onlyFaults.has(f.name));

let image: Promise<FaultImage> | undefined;
let imageDir: string | undefined;
/** The image, built once for every backend of this file. */
function sharedImage(): Promise<FaultImage> {
  if (image === undefined) {
    imageDir = mkdtempSync(join(tmpdir(), 'nydus-faults-'));
    image = buildFaultImage(imageDir);
  }
  return image;
}

test.after(() => {
  if (imageDir !== undefined) rmSync(imageDir, { recursive: true, force: true });
});

function check(r: FaultResult): void {
  const line = resultLine(r);
  assert.equal(r.failed, undefined, line);
  assert.equal(r.during.wrong, 0, `wrong bytes read (${r.during.wrongFiles.join(', ')}): ${line}`);
  assert.equal(r.during.hung, 0, `a reader ran past ${READER_BOUND_MS} ms: ${line}`);
  assert.equal(r.during.right + r.during.errors, r.files * r.readers, `every read accounted for: ${line}`);
  assert.ok(r.proxy.injected > 0, `the fault was injected: ${line}`);
  assert.equal(r.after.wrong, 0, line);
  assert.ok(r.recovered, line);
  assert.ok(r.cleanStop, line);
}

for (const backend of FAULT_BACKENDS) {
  if (onlyBackends !== undefined && !onlyBackends.has(backend.name)) continue;
  test(`faults over the ${backend.name} backend: right bytes or EIO under every fault, never wrong bytes, no hang, every file right once the fault clears`, async (t) => {
    if (!canFuse(t)) return;
    const why = backend.unavailable();
    if (why !== undefined) {
      if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
      process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
      t.skip(why);
      return;
    }
    const img = await sharedImage();
    const results = await runBackendFaults(backend, img, faults, (r) => t.diagnostic(resultLine(r)));
    for (const r of results) check(r);
    // When every response is wrong, reads fail, and only with EIO.
    const allFlipped = results.find((r) => r.fault === 'flipped byte, every response');
    if (allFlipped !== undefined) {
      // A response carries one chunk or several (merged and read-ahead ranges); the flipped
      // byte spoils one of them, whose reads fail, while the other chunks of the response
      // verify and read right. So reads fail, but not necessarily every read of data.
      const empty = [...img.md5.values()].filter((m) => m === 'd41d8cd98f00b204e9800998ecf8427e').length;
      assert.ok(allFlipped.during.errors > 0, resultLine(allFlipped));
      assert.ok(allFlipped.during.right >= empty * allFlipped.readers, resultLine(allFlipped));
      assert.deepEqual(
        Object.keys(allFlipped.during.errorKinds),
        ['Input/output error'],
        resultLine(allFlipped),
      );
    }
  });
}
