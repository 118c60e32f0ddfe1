import { isDeepStrictEqual } from 'node:util';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorText, NydusError } from '../errors/errors.js';
import { parseBootstrap } from '../format/bootstrap.js';
import type { Logger } from '../log/logger.js';
import { parseImageConfig, type ImageConfig, type ImageManifest, type Platform } from '../oci/manifest.js';
import { ANNOTATION_NYDUS_BLOB, ANNOTATION_NYDUS_REF, NYDUS_BLOB_LAYER } from '../oci/media-types.js';
import { referenceTagOrDigest } from '../oci/reference.js';
import type { RegistryClient, Repository, ResolvedImage } from '../registry/client.js';
import { daemonConfig, NydusdProcess, registryBackendConfig } from './nydusd-runner.js';
import { findBootstrapLayer } from './bootstrap-layer.js';
import { isNydusEntry, pullBootstrap } from './pull-bootstrap.js';
import { parseRef, Remotes } from './repo.js';
import { nydusdBackend } from './object-store.js';
import { compareTrees } from './tree-compare.js';
import { unpackLayers } from './unpack-layers.js';

/**
 * `nydusify check`: the manifest, bootstrap and filesystem rules upstream applies to a Nydus
 * image (and, when given, the OCI image it was converted from). The work dir gets the files
 * upstream writes: `source/` and `target/` with the index, manifest, config and the unpacked
 * bootstrap layer (`target/nydus_bootstrap/image/image.boot`).
 */

export interface CheckOptions {
  target: string;
  source?: string | undefined;
  targetInsecure: boolean;
  sourceInsecure: boolean;
  platform: Platform;
  workDir: string;
  /** The backend nydusd reads the target's blobs from (default: the target's registry). */
  targetBackend?: { type: string; config: Record<string, unknown> } | undefined;
  nydusd?: string | undefined;
  log: Logger;
}

export interface CheckReport {
  /** Each rule's problems; empty when it passed. `filesystem` is undefined when not run. */
  manifest: string[];
  bootstrap: string[];
  filesystem: string[] | undefined;
}

export function reportPassed(r: CheckReport): boolean {
  return r.manifest.length === 0 && r.bootstrap.length === 0 && (r.filesystem?.length ?? 0) === 0;
}

interface Side {
  client: RegistryClient;
  repo: Repository;
  m: ResolvedImage;
  config: ImageConfig;
}

/**
 * The image `refText` names (a Nydus manifest preferred in a merged-platform index) and its
 * config, falling back to plain HTTP when HTTPS fails (as upstream's checker).
 */
async function openSide(
  remotes: Remotes,
  refText: string,
  insecure: boolean,
  platform: Platform,
  log: Logger,
): Promise<Side> {
  const ref = parseRef(refText);
  const attempt = async (plainHttp: boolean): Promise<Side> => {
    const client = remotes.client(ref.host, { insecure, plainHttp });
    const repo = client.repository(ref.repository);
    const m = await repo.resolveImage(referenceTagOrDigest(ref), platform, isNydusEntry);
    const config = parseImageConfig(await repo.fetchBlob(m.manifest.config.digest));
    return { client, repo, m, config };
  };
  try {
    return await attempt(false);
  } catch (e) {
    if (!(e instanceof NydusError && e.code === 'ERR_NETWORK')) throw e;
    log.warn(`${refText}: HTTPS failed (${errorText(e)}), retrying over plain HTTP`);
    return await attempt(true);
  }
}

/** `config.config` of two images, compared as upstream does (ArgsEscaped ignored). */
function runConfig(c: ImageConfig): unknown {
  const inner = c.config;
  if (typeof inner !== 'object' || inner === null) return inner ?? {};
  const copy = { ...(inner as Record<string, unknown>) };
  delete copy['ArgsEscaped'];
  return copy;
}

function manifestRule(
  target: ImageManifest,
  tconf: ImageConfig,
  source?: { m: ImageManifest; c: ImageConfig },
): string[] {
  const out: string[] = [];
  const boot = findBootstrapLayer(target);
  if (boot === undefined) out.push('the last layer of the Nydus manifest is not a bootstrap layer');
  target.layers.slice(0, -1).forEach((l, i) => {
    if (l.mediaType !== NYDUS_BLOB_LAYER)
      out.push(`layer ${i} (${l.digest}) has media type ${l.mediaType}, not ${NYDUS_BLOB_LAYER}`);
    if (l.annotations?.[ANNOTATION_NYDUS_BLOB] !== 'true')
      out.push(`layer ${i} (${l.digest}) lacks the annotation ${ANNOTATION_NYDUS_BLOB}: "true"`);
  });
  const ids = tconf.rootfs?.diff_ids ?? [];
  if (ids.length !== target.layers.length)
    out.push(`the Nydus config has ${ids.length} diff_ids for ${target.layers.length} layers`);
  if (source !== undefined) {
    const sids = source.c.rootfs?.diff_ids ?? [];
    if (sids.length !== source.m.layers.length)
      out.push(`the source config has ${sids.length} diff_ids for ${source.m.layers.length} layers`);
    if (!isDeepStrictEqual(runConfig(source.c), runConfig(tconf)))
      out.push('the image configs (config.config) of the source and the Nydus image differ');
  }
  return out;
}

function bootstrapRule(bytes: Buffer, target: ImageManifest): string[] {
  const out: string[] = [];
  let b;
  try {
    b = parseBootstrap(bytes);
    b.validate();
  } catch (e) {
    return [`the bootstrap is not valid: ${errorText(e)}`];
  }
  const layers = new Set(
    target.layers
      .slice(0, -1)
      .filter((l) => l.annotations?.[ANNOTATION_NYDUS_REF] === undefined)
      .map((l) => l.digest.replace(/^sha256:/, '')),
  );
  // No blob layer at all: the blobs live in a storage backend (`convert --backend-type`), as
  // upstream's rule accepts.
  if (layers.size === 0) return out;
  const zran = target.layers.some((l) => l.annotations?.[ANNOTATION_NYDUS_REF] !== undefined);
  for (const blob of b.blobs) {
    if (!layers.has(blob.blobId) && !zran)
      out.push(`blob ${blob.blobId} of the bootstrap is not a layer of the Nydus manifest`);
  }
  return out;
}

/** Run the rules; the report lists every problem found (an error only when checking itself failed). */
export async function checkImage(o: CheckOptions): Promise<CheckReport> {
  const log = o.log;
  await rm(o.workDir, { recursive: true, force: true });
  const tdir = join(o.workDir, 'target');
  const sdir = join(o.workDir, 'source');
  await mkdir(tdir, { recursive: true });
  const remotes = new Remotes(log);
  try {
    log.info(`Checking target image ${o.target}`);
    const t = await openSide(remotes, o.target, o.targetInsecure, o.platform, log);
    if (t.m.index !== undefined) await writeFile(join(tdir, 'nydus_index.json'), t.m.index.bytes);
    await writeFile(join(tdir, 'nydus_manifest.json'), t.m.bytes);
    await writeFile(join(tdir, 'nydus_config.json'), Buffer.from(JSON.stringify(t.config, null, 2)));
    let s: Side | undefined;
    if (o.source !== undefined) {
      await mkdir(sdir, { recursive: true });
      s = await openSide(remotes, o.source, o.sourceInsecure, o.platform, log);
      if (s.m.index !== undefined) await writeFile(join(sdir, 'oci_index.json'), s.m.index.bytes);
      await writeFile(join(sdir, 'oci_manifest.json'), s.m.bytes);
      await writeFile(join(sdir, 'oci_config.json'), Buffer.from(JSON.stringify(s.config, null, 2)));
    }
    const report: CheckReport = {
      manifest: manifestRule(t.m.manifest, t.config, s && { m: s.m.manifest, c: s.config }),
      bootstrap: [],
      filesystem: undefined,
    };
    const bootLayer = findBootstrapLayer(t.m.manifest);
    if (bootLayer === undefined) {
      report.bootstrap.push('no bootstrap layer to check');
      return report;
    }
    const bootDir = join(tdir, 'nydus_bootstrap');
    const bootFile = join(bootDir, 'image', 'image.boot');
    await pullBootstrap(t.repo, bootLayer, bootFile, bootDir);
    report.bootstrap = bootstrapRule(await readFile(bootFile), t.m.manifest);
    if (s === undefined || report.bootstrap.length > 0) return report;
    // The filesystem rule: the source layers applied in order against the Nydus image mounted
    // by nydusd with the registry (or given) backend.
    const rootfs = join(sdir, 'rootfs');
    await unpackLayers(s.repo, s.m.manifest.layers, rootfs, join(sdir, 'layers'), log);
    const mnt = join(tdir, 'mnt');
    await mkdir(mnt, { recursive: true });
    const backend = (o.targetBackend !== undefined ? nydusdBackend(o.targetBackend, log) : undefined) ?? {
      type: 'registry',
      config: await registryBackendConfig({
        ref: parseRef(o.target),
        plainHttp: t.client.scheme === 'http',
        insecure: o.targetInsecure,
      }),
    };
    const configFile = join(tdir, 'nydusd-config.json');
    await writeFile(configFile, JSON.stringify(daemonConfig(backend, join(tdir, 'cache'), false), null, 2), {
      mode: 0o600,
    });
    log.info(`Mounting ${o.target} with nydusd at ${mnt}`);
    const d = await NydusdProcess.start({
      ...(o.nydusd !== undefined ? { nydusd: o.nydusd } : {}),
      configFile,
      bootstrap: bootFile,
      mountpoint: mnt,
      logFile: join(tdir, 'nydusd.log'),
      log,
    });
    try {
      log.info('Comparing the source and the Nydus image file by file');
      report.filesystem = await compareTrees(rootfs, mnt);
    } finally {
      await d.stop();
    }
    return report;
  } finally {
    await remotes.close();
  }
}
