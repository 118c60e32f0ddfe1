import { randomBytes } from 'node:crypto';
import {
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { chmod, lstat, opendir, readdir, rmdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errorText, NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { mountPointsUnder } from '../util/mounts.js';
import type { MetaStore, SnapshotRecord } from './metastore.js';
import type { Info, Mount, Snapshotter, Usage } from './types.js';

/**
 * containerd's overlayfs snapshotter (snapshots/overlay/overlay.go in containerd 1.6), on our
 * SQLite metastore. Layout under root:
 *
 *   metadata.db            the MetaStore (opened by the caller)
 *   snapshots/<id>/fs      the snapshot's own tree: the upper dir of an active, a layer once committed
 *   snapshots/<id>/work    overlayfs work dir (active snapshots only)
 *   snapshots/new-XXXXXX   a snapshot being created (renamed to <id> in the creating transaction)
 *   snapshots/rm-*         a directory being deleted
 *
 * A snapshot without parents is a bind mount of its fs; an active with parents is an overlay
 * with its fs as upper dir; a view of one parent binds that parent read-only; a view of several
 * is a read-only overlay of the parents.
 */

/** Snapshot label that adds overlayfs' "volatile" option to the snapshot's writable mount. */
export const VOLATILE_LABEL = 'containerd.io/snapshot/overlay.volatile';

/** The kernel has overlayfs' index feature, which containerd turns off on every mount. */
const OVERLAY_INDEX_PARAM = '/sys/module/overlay/parameters/index';

export interface OverlayOptions {
  root: string;
  ms: MetaStore;
  log: Logger;
  /** Delete a removed snapshot's directory during Remove; otherwise Cleanup deletes it (containerd's default). */
  syncRemove?: boolean;
  /** Add "volatile" to every writable overlay mount (nydus-snapshotter's enable_overlayfs_volatile). */
  volatile?: boolean;
}

/**
 * containerd's fs.DiskUsage: walk the tree without following symlinks; every distinct inode
 * (device and inode number) counts once, with st_blocks * 512 bytes.
 */
export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0n;
  const visit = async (path: string): Promise<boolean> => {
    const st = await lstat(path, { bigint: true });
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      size += st.blocks * 512n;
    }
    return st.isDirectory();
  };
  const dirs: string[] = [];
  if (await visit(root)) dirs.push(root);
  for (let dir = dirs.pop(); dir !== undefined; dir = dirs.pop()) {
    const d = await opendir(dir);
    for await (const e of d) {
      const p = join(dir, e.name);
      if (await visit(p)) dirs.push(p);
    }
  }
  return { size: Number(size), inodes: seen.size };
}

function isErrno(e: unknown, ...codes: string[]): boolean {
  return e instanceof Error && codes.includes((e as NodeJS.ErrnoException).code ?? '');
}

/** Run op; on a permission error make `dir` writable and searchable by us once and retry. */
async function withWritable<T>(dir: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (e) {
    if (!isErrno(e, 'EACCES', 'EPERM')) throw e;
    await chmod(dir, 0o700);
    return await op();
  }
}

/**
 * Delete a tree without following symlinks (a symlink is unlinked, never entered) and without
 * crossing into another file system: a directory whose device differs from `dev` stops the
 * removal with an error.
 */
async function removeTree(path: string, dev: bigint): Promise<void> {
  // Whatever vanished meanwhile (a concurrent Cleanup) is as good as deleted.
  const gone = (e: unknown): void => {
    if (!isErrno(e, 'ENOENT')) throw e;
  };
  let st;
  try {
    st = await lstat(path, { bigint: true });
  } catch (e) {
    return gone(e);
  }
  if (!st.isDirectory()) {
    await withWritable(dirname(path), () => unlink(path)).catch(gone);
    return;
  }
  if (st.dev !== dev) {
    throw new NydusError('ERR_IO', `Directory "${path}" is on another file system; it is not removed`);
  }
  let names: string[];
  try {
    names = await withWritable(path, () => readdir(path));
  } catch (e) {
    return gone(e);
  }
  const BATCH = 32;
  for (let i = 0; i < names.length; i += BATCH) {
    await Promise.all(names.slice(i, i + BATCH).map((n) => removeTree(join(path, n), dev)));
  }
  await withWritable(dirname(path), () => rmdir(path)).catch(gone);
}

export class OverlaySnapshotter implements Snapshotter {
  readonly root: string;
  protected readonly ms: MetaStore;
  protected readonly log: Logger;
  protected readonly syncRemove: boolean;
  protected readonly volatile: boolean;
  /** The kernel knows overlayfs' index option: mounts get index=off, as containerd's do. */
  readonly indexOff: boolean;
  /** <root>/snapshots with symlinks resolved (how /proc/self/mountinfo spells it). */
  private readonly realSnapshots: string;
  /** Names under snapshots/ that a removal is working on; Cleanup leaves them alone. */
  private readonly removing = new Set<string>();
  private readonly pending = new Set<Promise<void>>();

  constructor(opts: OverlayOptions) {
    this.root = opts.root;
    this.ms = opts.ms;
    this.log = opts.log;
    this.syncRemove = opts.syncRemove ?? false;
    this.volatile = opts.volatile ?? false;
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
    mkdirSync(this.snapshotsRoot, { recursive: true, mode: 0o700 });
    this.realSnapshots = realpathSync(this.snapshotsRoot);
    this.indexOff = existsSync(OVERLAY_INDEX_PARAM);
  }

  get snapshotsRoot(): string {
    return join(this.root, 'snapshots');
  }

  snapshotDir(id: string): string {
    return join(this.root, 'snapshots', id);
  }

  upperPath(id: string): string {
    return join(this.root, 'snapshots', id, 'fs');
  }

  workPath(id: string): string {
    return join(this.root, 'snapshots', id, 'work');
  }

  /**
   * Create the metadata and the directories of an active or view snapshot. The directories are
   * made under a temporary name and renamed to snapshots/<id> inside the metadata transaction,
   * so a crash leaves either nothing or a temporary directory that Cleanup removes.
   */
  createSnapshot(
    kind: 'active' | 'view',
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<SnapshotRecord> {
    const td = mkdtempSync(join(this.snapshotsRoot, 'new-'));
    let created: string | undefined;
    try {
      mkdirSync(join(td, 'fs'), { mode: 0o755 });
      if (kind === 'active') mkdirSync(join(td, 'work'), { mode: 0o711 });
      const rec = this.ms.transaction(() => {
        const r = this.ms.createSnapshot(kind, key, parent, labels);
        const parentId = r.parentIds[0];
        if (parentId !== undefined) {
          const st = statSync(this.upperPath(parentId));
          lchownSync(join(td, 'fs'), st.uid, st.gid);
        }
        const path = this.snapshotDir(r.id);
        this.moveAsideStale(r.id);
        renameSync(td, path);
        created = path;
        return r;
      });
      this.log.debug(`Created ${kind} snapshot "${key}" (id ${rec.id}, parent "${parent}")`);
      return Promise.resolve(rec);
    } catch (e) {
      // Either holds only the empty directories made above.
      try {
        rmSync(created ?? td, { recursive: true, force: true });
      } catch (e2) {
        this.log.warn(`Removing "${created ?? td}" after a failed create failed: ${errorText(e2)}`);
      }
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /**
   * A directory snapshots/<id> for an id the sequence just handed out can only be left over from
   * a crash between its rename and the commit of its transaction: move it out of the way.
   */
  private moveAsideStale(id: string): void {
    try {
      lstatSync(this.snapshotDir(id));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      throw e;
    }
    const aside = this.removalName(id);
    this.log.warn(
      `Snapshot directory "${this.snapshotDir(id)}" is left over from a crash; moved to "${aside}"`,
    );
    renameSync(this.snapshotDir(id), join(this.snapshotsRoot, aside));
  }

  private removalName(name: string): string {
    return `rm-${name}.${randomBytes(3).toString('hex')}`;
  }

  /** The mounts containerd's overlay snapshotter returns for an active or view snapshot. */
  mountsFor(rec: SnapshotRecord, labels: Record<string, string>): Mount[] {
    const [nearest] = rec.parentIds;
    if (nearest === undefined) {
      // One layer only: overlayfs needs a lower dir, so bind the snapshot's own tree.
      return [
        {
          type: 'bind',
          source: this.upperPath(rec.id),
          options: [rec.kind === 'active' ? 'rw' : 'ro', 'rbind'],
        },
      ];
    }
    const options: string[] = [];
    if (this.indexOff) options.push('index=off');
    if (rec.kind === 'active') {
      options.push(`workdir=${this.workPath(rec.id)}`, `upperdir=${this.upperPath(rec.id)}`);
      if (this.volatile || Object.hasOwn(labels, VOLATILE_LABEL)) options.push('volatile');
    } else if (rec.parentIds.length === 1) {
      return [{ type: 'bind', source: this.upperPath(nearest), options: ['ro', 'rbind'] }];
    }
    options.push(`lowerdir=${rec.parentIds.map((id) => this.upperPath(id)).join(':')}`);
    return [{ type: 'overlay', source: 'overlay', options }];
  }

  stat(key: string): Promise<Info> {
    return Promise.resolve().then(() => this.ms.getInfo(key).info);
  }

  update(info: Info, fieldpaths: string[]): Promise<Info> {
    return Promise.resolve().then(() => this.ms.updateInfo(info, fieldpaths));
  }

  /** An active snapshot's usage is measured now; any other's is what Commit stored. */
  async usage(key: string): Promise<Usage> {
    const { id, info, usage } = this.ms.getInfo(key);
    if (info.kind !== 'active') return usage;
    return this.measure(key, id);
  }

  private async measure(key: string, id: string): Promise<Usage> {
    try {
      return await diskUsage(this.upperPath(id));
    } catch (e) {
      // Removed while we were measuring: say so as containerd's next lookup would.
      if (isErrno(e, 'ENOENT')) this.ms.getInfo(key);
      throw new NydusError('ERR_IO', `Measuring the usage of snapshot "${key}" failed: ${errorText(e)}`, {
        cause: e,
      });
    }
  }

  mounts(key: string): Promise<Mount[]> {
    return Promise.resolve().then(() => {
      const { info } = this.ms.getInfo(key);
      return this.mountsFor(this.ms.getSnapshot(key), info.labels);
    });
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.mountsFor(await this.createSnapshot('active', key, parent, labels), labels);
  }

  async view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.mountsFor(await this.createSnapshot('view', key, parent, labels), labels);
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    const { id } = this.ms.getInfo(key);
    const usage = await this.measure(key, id);
    this.ms.commitActive(key, name, usage, labels);
    this.log.debug(`Committed snapshot "${key}" as "${name}" (id ${id}, ${usage.size} bytes)`);
  }

  /**
   * Remove the snapshot's metadata (one transaction); with syncRemove also its directory, else
   * Cleanup deletes that later. A directory that cannot be deleted is logged, not an error: the
   * snapshot is gone either way, and Cleanup retries.
   */
  async remove(key: string): Promise<void> {
    const { id, kind } = this.ms.remove(key);
    this.log.debug(`Removed ${kind} snapshot "${key}" (id ${id})`);
    if (this.syncRemove) await this.removeLogged(id);
  }

  async walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void> {
    const infos: Info[] = [];
    this.ms.walk((i) => infos.push(i), filters);
    for (const i of infos) await fn(i);
  }

  /** Delete every directory under snapshots/ that no snapshot owns (and no removal is working on). */
  async cleanup(): Promise<void> {
    const live = this.ms.ids();
    const names = readdirSync(this.snapshotsRoot).filter((n) => !live.has(n) && !this.removing.has(n));
    for (const n of names) await this.removeLogged(n);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    this.ms.close();
  }

  private async removeLogged(name: string): Promise<void> {
    const p = this.removeDirectory(name).catch((e: unknown) => {
      this.log.warn(
        `Removing snapshot directory "${join(this.snapshotsRoot, name)}" failed: ${errorText(e)}`,
      );
    });
    this.pending.add(p);
    try {
      await p;
    } finally {
      this.pending.delete(p);
    }
  }

  /**
   * Delete snapshots/<name>, which no snapshot owns. It is refused while anything is mounted at
   * or below it; otherwise it is renamed to a removal name first (so a crash mid-way leaves a
   * directory that is plainly garbage), then deleted without following symlinks or crossing file
   * systems. A subclass that mounts things inside snapshot directories overrides this to unmount
   * them first, then calls super.
   */
  protected async removeDirectory(name: string): Promise<void> {
    const path = join(this.snapshotsRoot, name);
    let st;
    try {
      st = lstatSync(path, { bigint: true });
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      throw e;
    }
    if (this.ms.ids().has(name)) {
      throw new NydusError('ERR_FAILED_PRECONDITION', `Directory "${path}" belongs to a live snapshot`);
    }
    if (st.isDirectory()) {
      const mounts = mountPointsUnder(join(this.realSnapshots, name));
      if (mounts.length > 0) {
        throw new NydusError(
          'ERR_FAILED_PRECONDITION',
          `Directory "${path}" has mounts at or below it (${mounts.map((m) => `"${m}"`).join(', ')}); it is not removed`,
        );
      }
    }
    const target = name.startsWith('rm-') ? name : this.removalName(name);
    const doomed = join(this.snapshotsRoot, target);
    this.removing.add(name);
    this.removing.add(target);
    try {
      if (target !== name) renameSync(path, doomed);
      await removeTree(doomed, st.dev);
      this.log.debug(`Deleted snapshot directory "${path}"`);
    } finally {
      this.removing.delete(name);
      this.removing.delete(target);
    }
  }
}
