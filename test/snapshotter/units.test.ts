import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import {
  LABEL_CRI_IMAGE_REF,
  LABEL_CRI_LAYER_DIGEST,
  LABEL_CRI_MANIFEST_DIGEST,
  LABEL_NYDUS_DATA,
  LABEL_NYDUS_IMAGE_REF,
  LABEL_NYDUS_META,
  LABEL_OVERLAY_VOLATILE,
  LABEL_PULL_SECRET,
  LABEL_PULL_USERNAME,
  LABEL_STARGZ_REFERENCE,
  LABEL_TARGET_REF,
  imageRefOf,
  isNydusDataLayer,
  isNydusMetaLayer,
} from '../../src/snapshotter/labels.js';
import { IN_CI } from '../helpers/fixtures.js';

/**
 * The snapshot labels (upstream-surface §7.5). The names containerd and ctr-remote set are
 * checked against the installed binaries themselves (Go keeps string constants verbatim in the
 * executable); the names only the Nydus snapshotter reads against its label package.
 */

/** The executable's bytes, or a loud skip (a failure under CI) when it is not installed. */
function binary(t: TestContext, path: string): Buffer | undefined {
  if (existsSync(path)) return readFileSync(path);
  const why = `${path} is not installed`;
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return undefined;
}

test('the labels containerd (CRI plugin, unpacker) sets are the ones we read', (t) => {
  const bin = binary(t, '/usr/bin/containerd');
  if (bin === undefined) return;
  for (const l of [
    LABEL_TARGET_REF,
    LABEL_CRI_IMAGE_REF,
    LABEL_CRI_LAYER_DIGEST,
    LABEL_CRI_MANIFEST_DIGEST,
  ]) {
    assert.ok(bin.includes(l), `containerd does not contain ${l}`);
  }
});

test('the image reference label ctr-remote rpull sets is the one we read', (t) => {
  const bin = binary(t, '/usr/bin/ctr-remote');
  if (bin === undefined) return;
  assert.ok(bin.includes(LABEL_STARGZ_REFERENCE), `ctr-remote does not contain ${LABEL_STARGZ_REFERENCE}`);
  assert.ok(bin.includes(LABEL_TARGET_REF));
});

test('the Nydus snapshotter label names (upstream pkg/label)', () => {
  assert.equal(LABEL_PULL_USERNAME, 'containerd.io/snapshot/pullusername');
  assert.equal(LABEL_PULL_SECRET, 'containerd.io/snapshot/pullsecret');
  assert.equal(LABEL_NYDUS_META, 'containerd.io/snapshot/nydus-bootstrap');
  assert.equal(LABEL_NYDUS_DATA, 'containerd.io/snapshot/nydus-blob');
  assert.equal(LABEL_OVERLAY_VOLATILE, 'containerd.io/snapshot/overlay.volatile');
  // Ours, in the namespace containerd hands to snapshotters.
  assert.ok(LABEL_NYDUS_IMAGE_REF.startsWith('containerd.io/snapshot/'));
});

test('isNydusDataLayer / isNydusMetaLayer go by the presence of the label', () => {
  assert.equal(isNydusDataLayer({ [LABEL_NYDUS_DATA]: 'true' }), true);
  assert.equal(isNydusDataLayer({ [LABEL_NYDUS_DATA]: '' }), true);
  assert.equal(isNydusDataLayer({ [LABEL_NYDUS_META]: 'true' }), false);
  assert.equal(isNydusDataLayer({}), false);
  assert.equal(isNydusMetaLayer({ [LABEL_NYDUS_META]: 'true' }), true);
  assert.equal(isNydusMetaLayer({ [LABEL_NYDUS_DATA]: 'true' }), false);
  assert.equal(isNydusMetaLayer({ [LABEL_CRI_IMAGE_REF]: 'x' }), false);
  assert.equal(isNydusMetaLayer({}), false);
});

test('imageRefOf: ours, then CRI, then ctr-remote; empty values are skipped', () => {
  const ours = '127.0.0.1:5000/ours:v1';
  const cri = '127.0.0.1:5000/cri:v1';
  const stargz = '127.0.0.1:5000/stargz:v1';
  assert.equal(
    imageRefOf({
      [LABEL_STARGZ_REFERENCE]: stargz,
      [LABEL_CRI_IMAGE_REF]: cri,
      [LABEL_NYDUS_IMAGE_REF]: ours,
    }),
    ours,
  );
  assert.equal(imageRefOf({ [LABEL_STARGZ_REFERENCE]: stargz, [LABEL_CRI_IMAGE_REF]: cri }), cri);
  assert.equal(imageRefOf({ [LABEL_STARGZ_REFERENCE]: stargz }), stargz);
  assert.equal(
    imageRefOf({ [LABEL_NYDUS_IMAGE_REF]: '', [LABEL_CRI_IMAGE_REF]: '', [LABEL_STARGZ_REFERENCE]: stargz }),
    stargz,
  );
  assert.equal(imageRefOf({ [LABEL_NYDUS_IMAGE_REF]: '' }), undefined);
  assert.equal(imageRefOf({ [LABEL_TARGET_REF]: 'chain' }), undefined);
  assert.equal(imageRefOf({}), undefined);
});
