import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errorText, NydusError } from '../errors/errors.js';
import type { Descriptor } from '../oci/manifest.js';
import { NYDUS_ARTIFACT_TYPE, NYDUS_OS_FEATURE } from '../oci/media-types.js';
import type { Repository } from '../registry/client.js';
import {
  BOOTSTRAP_FILE_IN_LAYER,
  MAX_BOOTSTRAP_LAYER_SIZE,
  readBootstrapLayerFiles,
} from './bootstrap-layer.js';

/**
 * Whether an index entry is a Nydus manifest: `Repository.resolveImage` prefers these, as a
 * merged-platform (`--merge-platform`) index lists an OCI and a Nydus manifest per platform.
 */
export function isNydusEntry(d: Descriptor): boolean {
  return (
    d.artifactType === NYDUS_ARTIFACT_TYPE || (d.platform?.['os.features'] ?? []).includes(NYDUS_OS_FEATURE)
  );
}

/**
 * Fetch the bootstrap layer (digest-verified by the client) and write its `image/image.boot`
 * to `dest`; with `unpackDir`, every file of the layer is written below it too (`nydusify
 * check` keeps them). A layer without the bootstrap fails.
 */
export async function pullBootstrap(
  repo: Repository,
  layer: Descriptor,
  dest: string,
  unpackDir?: string,
): Promise<void> {
  const where = `bootstrap layer ${repo.name}@${layer.digest}`;
  if (layer.size > MAX_BOOTSTRAP_LAYER_SIZE)
    throw new NydusError('ERR_FORMAT', `${where} is too large (${layer.size} bytes)`);
  let files: Map<string, Buffer>;
  try {
    files = await readBootstrapLayerFiles(await repo.fetchBlob(layer.digest));
  } catch (e) {
    throw new NydusError(
      e instanceof NydusError ? e.code : 'ERR_IO',
      `Cannot read ${where}: ${errorText(e)}`,
      {
        cause: e,
      },
    );
  }
  const boot = files.get(BOOTSTRAP_FILE_IN_LAYER);
  if (boot === undefined) throw new NydusError('ERR_FORMAT', `${where} holds no ${BOOTSTRAP_FILE_IN_LAYER}`);
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.${process.pid}.tmp`;
  await writeFile(tmp, boot);
  await rename(tmp, dest);
  if (unpackDir === undefined) return;
  for (const [name, data] of files) {
    if (name.split('/').some((p) => p === '..' || p === '')) continue;
    const out = join(unpackDir, name);
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, data);
  }
}
