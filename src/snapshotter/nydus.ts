import { closeSync, existsSync, openSync, readdirSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { NydusError, errorText } from '../errors/errors.js';
import { detectRafsVersion } from '../format/bootstrap.js';
import type { Logger } from '../log/logger.js';
import { parseReference } from '../oci/reference.js';
import type { DaemonManager } from './daemons.js';
import type { Keychain } from './keychain.js';
import { mirrorsFor, pickMirror } from './mirrors.js';
import {
  LABEL_NYDUS_IMAGE_REF,
  LABEL_TARGET_REF,
  imageRefOf,
  isNydusDataLayer,
  isNydusMetaLayer,
} from './labels.js';
import type { MetaStore, SnapshotRecord } from './metastore.js';
import { imageConfig, type JsonObject } from './nydusd-config.js';
import { checkBootstrap, checkRegistryAccess } from './preflight.js';
import type { OverlaySnapshotter } from './overlay.js';
import type { Info, Mount, Snapshotter, Usage } from './types.js';

/**
 * The Nydus snapshotter (upstream-surface §7.5-§7.7) over the overlay base:
 * - a Nydus data layer is committed at once under its target name and answered AlreadyExists,
 *   so containerd never downloads it (the lazy pull);
 * - the Nydus meta layer is an ordinary layer: containerd unpacks the small bootstrap layer into
 *   it (`fs/image/image.boot`);
 * - a container snapshot above a meta layer gets the image mounted by nydusd and an overlay
 *   whose lower dir is that mount;
 * - anything else behaves as containerd's overlayfs snapshotter, so OCI images keep working.
 */

export interface NydusSnapshotterOptions {
  ms: MetaStore;
  overlay: OverlaySnapshotter;
  daemons: DaemonManager;
  keychain: Keychain;
  /** The nydusd config template (`--nydusd-config`). */
  template: JsonObject;
  cacheDir: string;
  /** Tear down every daemon and mount when closing (`cleanup_on_close`). */
  cleanupOnClose: boolean;
  /** `[remote.mirrors_config] dir`: containerd-style hosts.toml files; '' for none. */
  mirrorsDir: string;
  /** `[snapshot] enable_nydus_overlayfs`: hand containers `fuse.<helper>` mounts carrying the
   * image's details in `extraoption=` (for Kata; runc's shim runs the helper, which drops it). */
  nydusOverlayfs?: { path: string } | undefined;
  log: Logger;
}

/** Where the bootstrap of a meta layer is after containerd unpacked it. */
export function bootstrapIn(fsDir: string): string | undefined {
  for (const p of [join(fsDir, 'image', 'image.boot'), join(fsDir, 'image.boot')])
    if (existsSync(p)) return p;
  return undefined;
}

export class NydusSnapshotter implements Snapshotter {
  readonly #o: NydusSnapshotterOptions;

  constructor(o: NydusSnapshotterOptions) {
    this.#o = o;
  }

  stat(key: string): Promise<Info> {
    return this.#o.overlay.stat(key);
  }

  update(info: Info, fieldpaths: string[]): Promise<Info> {
    return this.#o.overlay.update(info, fieldpaths);
  }

  usage(key: string): Promise<Usage> {
    return this.#o.overlay.usage(key);
  }

  async mounts(key: string): Promise<Mount[]> {
    const rec = this.#o.ms.getSnapshot(key);
    const chain = this.#o.ms.chain(key);
    const own = chain[0]!.info;
    if (rec.kind !== 'committed' && !(LABEL_TARGET_REF in own.labels)) {
      const meta = metaIndex(chain);
      if (meta > 0) return this.remoteMounts(rec, chain, meta, own.labels);
    }
    return this.#o.overlay.mounts(key);
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const target = labels[LABEL_TARGET_REF];
    if (target !== undefined && target !== '') {
      if (isNydusDataLayer(labels)) return this.skipLayer(key, parent, target, labels);
      // The meta layer and plain OCI layers are unpacked by containerd.
      return this.#o.overlay.prepare(key, parent, labels);
    }
    return this.createWithRemote('active', key, parent, labels);
  }

  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.createWithRemote('view', key, parent, labels);
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    await this.#o.overlay.commit(name, key, labels);
    if (!isNydusMetaLayer(labels)) return;
    // Remember which image a meta layer belongs to: containers above it mount that image.
    const info = await this.#o.overlay.stat(name);
    const ref = imageRefOf(info.labels);
    if (ref !== undefined && info.labels[LABEL_NYDUS_IMAGE_REF] === undefined) {
      await this.#o.overlay.update({ ...info, labels: { ...info.labels, [LABEL_NYDUS_IMAGE_REF]: ref } }, [
        `labels.${LABEL_NYDUS_IMAGE_REF}`,
      ]);
    }
  }

  async remove(key: string): Promise<void> {
    const { id, info } = this.#o.ms.getInfo(key);
    if (info.kind === 'committed' && isNydusMetaLayer(info.labels)) {
      // Containers above it are gone (containerd removes children first), so is the image.
      await this.#o.daemons.umount(id);
    }
    await this.#o.overlay.remove(key);
  }

  walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void> {
    return this.#o.overlay.walk(fn, filters);
  }

  /** containerd's GC: unmount images whose meta snapshot is gone, remove orphaned directories,
   * then delete cache blobs no running image uses. */
  async cleanup(): Promise<void> {
    const ids = this.#o.ms.ids();
    for (const inst of this.#o.daemons.instances()) {
      if (!ids.has(inst.snapshotId)) {
        this.#o.log.info(`Unmounting image ${inst.imageRef} of removed snapshot ${inst.snapshotId}`);
        await this.#o.daemons.umount(inst.snapshotId);
      }
    }
    await this.#o.overlay.cleanup();
    await this.gcCache();
  }

  async close(): Promise<void> {
    await this.#o.daemons.close(this.#o.cleanupOnClose);
    await this.#o.overlay.close();
  }

  /** The lazy pull: commit the data layer under its target name without content. */
  private async skipLayer(
    key: string,
    parent: string,
    target: string,
    labels: Record<string, string>,
  ): Promise<Mount[]> {
    const exists = (): NydusError =>
      new NydusError('ERR_ALREADY_EXISTS', `target snapshot "${target}" already exists`);
    try {
      await this.#o.overlay.stat(target);
      throw exists();
    } catch (e) {
      if (!(e instanceof NydusError) || e.code !== 'ERR_NOT_FOUND') throw e;
    }
    await this.#o.overlay.createSnapshot('active', key, parent, labels);
    try {
      this.#o.ms.commitActive(key, target, { size: 0, inodes: 0 }, labels);
    } catch (e) {
      await this.#o.overlay.remove(key).catch(() => undefined);
      throw e;
    }
    this.#o.log.debug(`Nydus data layer ${target} committed without content (lazy)`);
    throw exists();
  }

  private async createWithRemote(
    kind: 'active' | 'view',
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<Mount[]> {
    const rec = await this.#o.overlay.createSnapshot(kind, key, parent, labels);
    const chain = this.#o.ms.chain(key);
    const meta = metaIndex(chain);
    if (meta <= 0) return this.#o.overlay.mountsFor(rec, labels);
    try {
      return await this.remoteMounts(rec, chain, meta, labels);
    } catch (e) {
      // Leave nothing behind for a snapshot whose image cannot be mounted.
      await this.#o.overlay
        .remove(key)
        .catch((re: unknown) =>
          this.#o.log.warn(`Cannot remove snapshot "${key}" after a failed mount: ${errorText(re)}`),
        );
      throw e;
    }
  }

  /** Mount the image of the meta layer chain[meta] and stack the snapshot's overlay on it. */
  private async remoteMounts(
    rec: SnapshotRecord,
    chain: Array<{ id: string; info: Info }>,
    meta: number,
    labels: Record<string, string>,
  ): Promise<Mount[]> {
    const m = chain[meta]!;
    const fsDir = this.#o.overlay.upperPath(m.id);
    const bootstrap = bootstrapIn(fsDir);
    if (bootstrap === undefined) {
      throw new NydusError(
        'ERR_NOT_FOUND',
        `Nydus meta layer "${m.info.name}" has no bootstrap (image/image.boot) in ${fsDir}`,
      );
    }
    const refText = imageRefOf(m.info.labels) ?? imageRefOf(labels);
    if (refText === undefined) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Nydus meta layer "${m.info.name}" has no image reference label (pull with ctr-remote rpull or through CRI)`,
      );
    }
    const ref = parseReference(refText);
    const access = await this.#o.keychain.forImage(ref, { ...m.info.labels, ...labels });
    if (access !== undefined) this.#o.log.debug(`Credentials for ${refText} from ${access.source}`);
    const mirror =
      this.#o.mirrorsDir === '' ? undefined : await pickMirror(mirrorsFor(this.#o.mirrorsDir, ref.host));
    if (mirror !== undefined)
      this.#o.log.info(`Image ${refText} is read through mirror ${mirror.scheme}://${mirror.host}`);
    const config = imageConfig(
      this.#o.template,
      {
        ref,
        ...(access?.auth !== undefined ? { auth: access.auth } : {}),
        ...(access?.registryToken !== undefined ? { registryToken: access.registryToken } : {}),
        ...(mirror !== undefined ? { mirror } : {}),
      },
      this.#o.cacheDir,
      `/${m.id}`,
    );
    if (!this.#o.daemons.hasInstance(m.id)) {
      const blobIds = await checkBootstrap(bootstrap, refText);
      await checkRegistryAccess(config, blobIds, refText, this.#o.log);
    }
    const mnt = await this.#o.daemons.mount(
      { snapshotId: m.id, imageRef: refText, bootstrap, config },
      this.#o.overlay.snapshotDir(m.id),
    );
    // Plain layers committed above the image (a committed container) stay above its mount.
    const lowers = [...chain.slice(1, meta).map((c) => this.#o.overlay.upperPath(c.id)), mnt];
    const base = this.#o.overlay.mountsFor(rec, labels);
    const helper = this.#o.nydusOverlayfs;
    const extra =
      helper === undefined ? undefined : extraOption(bootstrap, config, this.#o.overlay.snapshotDir(m.id));
    return base.map((mt) => {
      if (mt.type === 'bind')
        return { ...mt, source: lowers.length === 1 && rec.kind === 'view' ? mnt : mt.source };
      const options = mt.options.map((o) => (o.startsWith('lowerdir=') ? `lowerdir=${lowers.join(':')}` : o));
      if (helper === undefined || extra === undefined || mt.type !== 'overlay') return { ...mt, options };
      return { ...mt, type: `fuse.${helper.path}`, options: [...options, extra] };
    });
  }

  /** Delete blob cache files that no running image lists among its files. */
  private async gcCache(): Promise<void> {
    const dir = this.#o.cacheDir;
    if (!existsSync(dir)) return;
    const used = await this.#o.daemons.usedCacheFiles();
    if (used === undefined) {
      this.#o.log.warn('Skipping cache GC: a nydusd did not report its cache files');
      return;
    }
    const usedNames = new Set([...used].map((f) => f.slice(f.lastIndexOf('/') + 1)));
    const usedBlobs = new Set([...usedNames].map((n) => n.split('.')[0]!));
    for (const name of readdirSync(dir)) {
      const blob = name.split('.')[0]!;
      if (usedNames.has(name) || usedBlobs.has(blob)) continue;
      try {
        rmSync(join(dir, name), { recursive: true, force: true });
        this.#o.log.info(`Deleted unused cache file ${name}`);
      } catch (e) {
        this.#o.log.warn(`Cannot delete cache file ${name}: ${errorText(e)}`);
      }
    }
  }
}

/** Index in the chain (self first) of the nearest Nydus meta layer, -1 when there is none. */
function metaIndex(chain: Array<{ info: Info }>): number {
  for (let i = 0; i < chain.length; i++) if (isNydusMetaLayer(chain[i]!.info.labels)) return i;
  return -1;
}

/** The `extraoption=` of a nydus-overlayfs mount: base64 JSON {source, config, snapshotdir,
 * fs_version} as upstream's snapshotter writes it for Kata. */
function extraOption(bootstrap: string, config: JsonObject, snapshotDir: string): string {
  let version = 'v6';
  try {
    const fd = openSync(bootstrap, 'r');
    try {
      const head = Buffer.alloc(2048);
      readSync(fd, head, 0, head.length, 0);
      version = detectRafsVersion(head) === 5 ? 'v5' : 'v6';
    } finally {
      closeSync(fd);
    }
  } catch {
    // checkBootstrap has read it already; keep the default
  }
  const json = JSON.stringify({
    source: bootstrap,
    config: JSON.stringify(config),
    snapshotdir: snapshotDir,
    fs_version: version,
  });
  return `extraoption=${Buffer.from(json).toString('base64')}`;
}
