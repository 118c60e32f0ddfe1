import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { NydusError } from '../errors/errors.js';
import { parseFilters, snapshotFields } from './filters.js';
import type { Info, Kind, Usage } from './types.js';

/**
 * The snapshotter's metadata: one row per snapshot (keyed by its key or, once committed, its
 * name), in SQLite. It keeps the behaviour of containerd's bolt metastore
 * (snapshots/storage/bolt.go): ids come from a sequence that never reuses a value and are handed
 * out as decimal strings; a committed snapshot keeps the id of the active it came from; only
 * committed snapshots can be parents; labels with an empty value are never stored.
 *
 * Every mutation is one transaction, and the database runs in WAL mode with synchronous=FULL, so
 * a crash at any point leaves either the state before or the state after a call.
 */

/** An active or view snapshot as the overlay layout needs it. */
export interface SnapshotRecord {
  id: string;
  kind: Kind;
  /** Ids of the parent chain, nearest parent first. */
  parentIds: string[];
}

/** containerd's limit on one label: key and value together at most 4096 bytes. */
export const MAX_LABEL_SIZE = 4096;

/** The schema this code writes. Older databases are migrated on open; newer ones are refused. */
export const SCHEMA_VERSION = 1;

/** MIGRATIONS[n] takes a database from schema version n to n + 1. */
const MIGRATIONS: ReadonlyArray<(db: Database.Database) => void> = [
  (db) => {
    db.exec(`
      CREATE TABLE snapshots (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        name      TEXT    NOT NULL UNIQUE,
        parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
        kind      TEXT    NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
        labels    TEXT    NOT NULL DEFAULT '{}',
        created   INTEGER NOT NULL,
        updated   INTEGER NOT NULL,
        size      INTEGER NOT NULL DEFAULT 0,
        inodes    INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX snapshots_parent ON snapshots(parent_id);
    `);
  },
];

interface Row {
  id: number;
  name: string;
  parent_id: number | null;
  parent_name: string | null;
  kind: Kind;
  labels: string;
  created: number;
  updated: number;
  size: number;
  inodes: number;
}

const SELECT_ROW = `SELECT s.id, s.name, s.parent_id, p.name AS parent_name, s.kind, s.labels, s.created,
  s.updated, s.size, s.inodes FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

function notFound(key: string): NydusError {
  return new NydusError('ERR_NOT_FOUND', `Snapshot "${key}" does not exist`);
}

function alreadyExists(key: string): NydusError {
  return new NydusError('ERR_ALREADY_EXISTS', `snapshot "${key}" already exists`);
}

/** A map without a prototype, so that a label named "__proto__" is just a label. */
function dict(): Record<string, string> {
  return Object.create(null) as Record<string, string>;
}

/** Labels as stored: validated, empty values dropped (containerd never stores those). */
function cleanLabels(labels: Record<string, string>): Record<string, string> {
  const out = dict();
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== 'string') {
      throw new NydusError('ERR_INVALID_ARG', `Label "${k}" has a value that is not a string`);
    }
    if (k === '') throw new NydusError('ERR_INVALID_ARG', 'Label key must not be empty');
    const size = Buffer.byteLength(k) + Buffer.byteLength(v);
    if (size > MAX_LABEL_SIZE) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Label "${k.slice(0, 64)}" is ${size} bytes (key and value), more than the maximum of ${MAX_LABEL_SIZE}`,
      );
    }
    if (v !== '') out[k] = v;
  }
  return out;
}

function parseLabels(json: string): Record<string, string> {
  return Object.assign(dict(), JSON.parse(json) as Record<string, string>);
}

function toInfo(r: Row): Info {
  return {
    name: r.name,
    parent: r.parent_name ?? '',
    kind: r.kind,
    labels: { ...parseLabels(r.labels) },
    created: new Date(r.created),
    updated: new Date(r.updated),
  };
}

export class MetaStore {
  private readonly stmts: {
    byName: Database.Statement<[string], Row>;
    chain: Database.Statement<[string], Row>;
    ancestors: Database.Statement<[number], { id: number }>;
    all: Database.Statement<[], Row>;
    insert: Database.Statement<[string, number | null, Kind, string, number, number]>;
    hasChild: Database.Statement<[number], { one: number }>;
    remove: Database.Statement<[number]>;
    setLabels: Database.Statement<[string, number, number]>;
    commit: Database.Statement<[string, string, number, number, number, number, number]>;
    ids: Database.Statement<[], { id: number; name: string }>;
  };

  private constructor(private readonly db: Database.Database) {
    this.stmts = {
      byName: db.prepare(`${SELECT_ROW} WHERE s.name = ?`),
      chain: db.prepare(`
        WITH RECURSIVE c(id, depth) AS (
          SELECT id, 0 FROM snapshots WHERE name = ?
          UNION ALL
          SELECT s.parent_id, c.depth + 1 FROM snapshots s JOIN c ON s.id = c.id WHERE s.parent_id IS NOT NULL
        )
        SELECT s.id, s.name, s.parent_id, p.name AS parent_name, s.kind, s.labels, s.created, s.updated,
          s.size, s.inodes
        FROM c JOIN snapshots s ON s.id = c.id LEFT JOIN snapshots p ON p.id = s.parent_id
        ORDER BY c.depth`),
      ancestors: db.prepare(`
        WITH RECURSIVE c(id, depth) AS (
          SELECT ?, 0
          UNION ALL
          SELECT s.parent_id, c.depth + 1 FROM snapshots s JOIN c ON s.id = c.id WHERE s.parent_id IS NOT NULL
        )
        SELECT id FROM c ORDER BY depth`),
      all: db.prepare(`${SELECT_ROW} ORDER BY s.name`),
      insert: db.prepare(
        'INSERT INTO snapshots (name, parent_id, kind, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      hasChild: db.prepare('SELECT 1 AS one FROM snapshots WHERE parent_id = ? LIMIT 1'),
      remove: db.prepare('DELETE FROM snapshots WHERE id = ?'),
      setLabels: db.prepare('UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?'),
      commit: db.prepare(
        `UPDATE snapshots SET name = ?, kind = 'committed', labels = ?, created = ?, updated = ?, size = ?,
          inodes = ? WHERE id = ?`,
      ),
      ids: db.prepare('SELECT id, name FROM snapshots'),
    };
  }

  /** Open (creating or migrating) the database at `path`. */
  static open(path: string): MetaStore {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const db = new Database(path, { timeout: 5000 });
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.transaction(() => {
        db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
        const row = db.prepare<[], { version: number }>('SELECT version FROM schema_version').get();
        let version = row?.version ?? 0;
        if (row === undefined) db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
        if (version > SCHEMA_VERSION) {
          throw new NydusError(
            'ERR_UNSUPPORTED',
            `Metadata database "${path}" has schema version ${version}; this snapshotter knows versions up to ${SCHEMA_VERSION}`,
          );
        }
        for (; version < SCHEMA_VERSION; version++) {
          (MIGRATIONS[version] as (d: Database.Database) => void)(db);
          db.prepare('UPDATE schema_version SET version = ?').run(version + 1);
        }
      }).immediate();
      return new MetaStore(db);
    } catch (e) {
      db.close();
      throw e;
    }
  }

  /** Schema version of the open database. */
  get schemaVersion(): number {
    return this.db.prepare<[], { version: number }>('SELECT version FROM schema_version').get()?.version ?? 0;
  }

  /**
   * Run fn in one write transaction (BEGIN IMMEDIATE): committed when fn returns, rolled back
   * when it throws. fn must be synchronous. A call inside another transaction joins it.
   */
  transaction<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    return this.db.transaction(fn).immediate();
  }

  private row(key: string): Row {
    const r = this.stmts.byName.get(key);
    if (r === undefined) throw notFound(key);
    return r;
  }

  private parentIds(parentId: number | null): string[] {
    if (parentId === null) return [];
    return this.stmts.ancestors.all(parentId).map((r) => String(r.id));
  }

  /** Create an active or view snapshot on top of a committed parent ('' for none). */
  createSnapshot(
    kind: 'active' | 'view',
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): SnapshotRecord {
    if (kind !== 'active' && kind !== 'view') {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Snapshot kind "${String(kind)}" cannot be created; only active and view can`,
      );
    }
    if (key === '') throw new NydusError('ERR_INVALID_ARG', 'Snapshot key must not be empty');
    const stored = JSON.stringify(cleanLabels(labels));
    return this.transaction(() => {
      let parentId: number | null = null;
      if (parent !== '') {
        const p = this.stmts.byName.get(parent);
        if (p === undefined) {
          throw new NydusError('ERR_NOT_FOUND', `Parent snapshot "${parent}" does not exist`);
        }
        if (p.kind !== 'committed') {
          // containerd's metastore answers InvalidArgument here (not FailedPrecondition).
          throw new NydusError('ERR_INVALID_ARG', `Parent snapshot "${parent}" is not committed`);
        }
        parentId = p.id;
      }
      if (this.stmts.byName.get(key) !== undefined) throw alreadyExists(key);
      const now = Date.now();
      const res = this.stmts.insert.run(key, parentId, kind, stored, now, now);
      return { id: String(res.lastInsertRowid), kind, parentIds: this.parentIds(parentId) };
    });
  }

  /** The record of an active or view snapshot; a committed one is ERR_FAILED_PRECONDITION. */
  getSnapshot(key: string): SnapshotRecord {
    const r = this.row(key);
    if (r.kind !== 'active' && r.kind !== 'view') {
      throw new NydusError('ERR_FAILED_PRECONDITION', `Snapshot "${key}" is not active or view`);
    }
    return { id: String(r.id), kind: r.kind, parentIds: this.parentIds(r.parent_id) };
  }

  getInfo(key: string): { id: string; info: Info; usage: Usage } {
    const r = this.row(key);
    return { id: String(r.id), info: toInfo(r), usage: { size: r.size, inodes: r.inodes } };
  }

  /** key's own snapshot first, then each parent up to the root. */
  chain(key: string): Array<{ id: string; info: Info }> {
    const rows = this.stmts.chain.all(key);
    if (rows.length === 0) throw notFound(key);
    return rows.map((r) => ({ id: String(r.id), info: toInfo(r) }));
  }

  /**
   * Change a snapshot's labels (nothing else can change). fieldpaths [] or ['labels'] replace
   * them all; 'labels.<k>' sets key k from info.labels, or deletes it when info.labels lacks it
   * (or has it empty); any other path is ERR_INVALID_ARG.
   */
  updateInfo(info: Info, fieldpaths: string[]): Info {
    return this.transaction(() => {
      const r = this.row(info.name);
      let labels = parseLabels(r.labels);
      const given = info.labels ?? {};
      if (fieldpaths.length === 0) labels = Object.assign(dict(), given);
      for (const path of fieldpaths) {
        if (path.startsWith('labels.')) {
          const k = path.slice('labels.'.length);
          const v = Object.hasOwn(given, k) ? given[k] : undefined;
          if (v === undefined || v === '') delete labels[k];
          else labels[k] = v;
        } else if (path === 'labels') {
          labels = Object.assign(dict(), given);
        } else {
          throw new NydusError(
            'ERR_INVALID_ARG',
            `Field "${path}" of snapshot "${info.name}" cannot be updated`,
          );
        }
      }
      const stored = cleanLabels(labels);
      const now = Date.now();
      this.stmts.setLabels.run(JSON.stringify(stored), now, r.id);
      return { ...toInfo(r), labels: { ...stored }, updated: new Date(now) };
    });
  }

  /**
   * Turn the active snapshot `key` into the committed snapshot `name`, keeping its id. As in
   * containerd, the committed snapshot's labels are exactly the commit's labels (the active's
   * are not inherited) and its created and updated times are now. Returns the id.
   */
  commitActive(key: string, name: string, usage: Usage, labels: Record<string, string>): string {
    if (name === '') throw new NydusError('ERR_INVALID_ARG', 'Snapshot name must not be empty');
    const stored = JSON.stringify(cleanLabels(labels));
    return this.transaction(() => {
      if (this.stmts.byName.get(name) !== undefined) throw alreadyExists(name);
      const r = this.row(key);
      if (r.kind !== 'active') {
        throw new NydusError('ERR_FAILED_PRECONDITION', `Snapshot "${key}" is not active`);
      }
      const now = Date.now();
      this.stmts.commit.run(name, stored, now, now, usage.size, usage.inodes, r.id);
      return String(r.id);
    });
  }

  /** Remove a snapshot that has no children; returns its id and kind. */
  remove(key: string): { id: string; kind: Kind } {
    return this.transaction(() => {
      const r = this.row(key);
      if (this.stmts.hasChild.get(r.id) !== undefined) {
        throw new NydusError(
          'ERR_FAILED_PRECONDITION',
          `Snapshot "${key}" has children and cannot be removed`,
        );
      }
      this.stmts.remove.run(r.id);
      return { id: String(r.id), kind: r.kind };
    });
  }

  /**
   * Call fn for every snapshot (in name order) that matches any of the filters (containerd
   * filter syntax; [] matches all). A malformed filter is ERR_INVALID_ARG.
   */
  walk(fn: (info: Info) => void, filters: string[]): void {
    const match = parseFilters(filters);
    for (const r of this.stmts.all.all()) {
      const info = toInfo(r);
      if (match(snapshotFields(info))) fn(info);
    }
  }

  /** Every snapshot id -> its key or name (what Cleanup keeps). */
  ids(): Map<string, string> {
    return new Map(this.stmts.ids.all().map((r) => [String(r.id), r.name]));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
