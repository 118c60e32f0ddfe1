/**
 * The snapshotter's model, as containerd's snapshots API defines it: a snapshot is a directory
 * tree with a parent chain, identified by a key (active or view) or a name (committed). Every
 * implementation (the overlay base, the Nydus snapshotter) and the gRPC service speak these types.
 */

/** containerd's snapshot kinds (proto enum Kind: UNKNOWN 0, VIEW 1, ACTIVE 2, COMMITTED 3). */
export type Kind = 'view' | 'active' | 'committed';

export interface Info {
  /** The key of an active or view snapshot, the name of a committed one. */
  name: string;
  /** Name of the parent (committed) snapshot; '' for none. */
  parent: string;
  kind: Kind;
  labels: Record<string, string>;
  created: Date;
  updated: Date;
}

/** A mount as containerd's types.Mount: the caller mounts it (or a chain of them). */
export interface Mount {
  type: string;
  source: string;
  /** Optional subpath target (containerd >= 1.7); '' or absent for the root. */
  target?: string;
  options: string[];
}

/** Disk usage of a snapshot: bytes and inodes used by its own (upper) directory. */
export interface Usage {
  size: number;
  inodes: number;
}

/**
 * containerd's snapshots.Snapshotter. Errors are NydusErrors whose codes map to gRPC statuses:
 * ERR_NOT_FOUND -> NotFound, ERR_ALREADY_EXISTS -> AlreadyExists, ERR_FAILED_PRECONDITION ->
 * FailedPrecondition, ERR_INVALID_ARG -> InvalidArgument, ERR_UNSUPPORTED -> Unimplemented,
 * anything else -> Unknown with the message.
 */
export interface Snapshotter {
  stat(key: string): Promise<Info>;
  /** Only labels can change: fieldpaths [] or ['labels'] replace them all, 'labels.<k>' sets or
   * (when absent from info.labels) deletes one key; any other path is ERR_INVALID_ARG. */
  update(info: Info, fieldpaths: string[]): Promise<Info>;
  usage(key: string): Promise<Usage>;
  mounts(key: string): Promise<Mount[]>;
  prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]>;
  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]>;
  commit(name: string, key: string, labels: Record<string, string>): Promise<void>;
  remove(key: string): Promise<void>;
  /** containerd's Walk (the List RPC): calls fn for every snapshot matching any of the filters
   * (containerd filter syntax; [] matches all). */
  walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void>;
  /** containerd's Cleanup (GC hook): removes whatever no snapshot references any more. */
  cleanup(): Promise<void>;
  close(): Promise<void>;
}
