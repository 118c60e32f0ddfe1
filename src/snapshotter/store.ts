import Database from 'better-sqlite3';
import { NydusError, errorText } from '../errors/errors.js';

/**
 * `<root>/nydus.db`: the daemons the snapshotter started and the RAFS instances they serve, so a
 * restarted (or crashed) snapshotter finds them again (upstream keeps the same two collections
 * in a bolt database). SQLite through better-sqlite3; every write is one transaction.
 */

export type DaemonMode = 'dedicated' | 'shared';

export interface DaemonRecord {
  id: string;
  mode: DaemonMode;
  /** The process last known to serve it (0 before it started). */
  pid: number;
  apiSock: string;
  mountpoint: string;
  /** The nydusd binary and arguments it was started with (a restart reuses them). */
  command: string[];
  logFile: string;
  /** Supervisor socket for failover (`--supervisor`), if any. */
  supervisor?: string;
  startedAt: number;
}

export interface InstanceRecord {
  /** The snapshot id of the Nydus meta layer. */
  snapshotId: string;
  daemonId: string;
  imageRef: string;
  bootstrap: string;
  /** Where the image's file system shows (the overlay lower dir). */
  mountpoint: string;
  /** The nydusd config of this instance. */
  configPath: string;
  /** In a shared daemon: the pseudo path it is mounted at (`/<snapshotId>`). */
  pseudoPath?: string;
}

const SCHEMA_VERSION = 1;

export class NydusStore {
  readonly #db: Database.Database;

  private constructor(db: Database.Database) {
    this.#db = db;
  }

  static open(path: string): NydusStore {
    let db: Database.Database | undefined;
    try {
      db = new Database(path);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.exec(`
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS daemons (id TEXT PRIMARY KEY, record TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS instances (snapshot_id TEXT PRIMARY KEY, daemon_id TEXT NOT NULL,
          record TEXT NOT NULL);
      `);
    } catch (e) {
      try {
        db?.close();
      } catch {
        // the error below says what went wrong
      }
      throw new NydusError('ERR_IO', `Cannot open the daemon database "${path}": ${errorText(e)}`, {
        cause: e,
      });
    }
    const row = db.prepare('SELECT value FROM meta WHERE key = ?').get('schema') as
      { value: string } | undefined;
    if (row === undefined) {
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema', String(SCHEMA_VERSION));
    } else if (Number(row.value) > SCHEMA_VERSION) {
      db.close();
      throw new NydusError(
        'ERR_UNSUPPORTED',
        `The daemon database "${path}" has schema ${row.value}, newer than this snapshotter's ${SCHEMA_VERSION}`,
      );
    }
    return new NydusStore(db);
  }

  putDaemon(d: DaemonRecord): void {
    this.#db
      .prepare(
        'INSERT INTO daemons (id, record) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET record = excluded.record',
      )
      .run(d.id, JSON.stringify(d));
  }

  deleteDaemon(id: string): void {
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM instances WHERE daemon_id = ?').run(id);
      this.#db.prepare('DELETE FROM daemons WHERE id = ?').run(id);
    })();
  }

  daemons(): DaemonRecord[] {
    return (this.#db.prepare('SELECT record FROM daemons ORDER BY id').all() as { record: string }[]).map(
      (r) => JSON.parse(r.record) as DaemonRecord,
    );
  }

  putInstance(i: InstanceRecord): void {
    this.#db
      .prepare(
        'INSERT INTO instances (snapshot_id, daemon_id, record) VALUES (?, ?, ?) ' +
          'ON CONFLICT(snapshot_id) DO UPDATE SET daemon_id = excluded.daemon_id, record = excluded.record',
      )
      .run(i.snapshotId, i.daemonId, JSON.stringify(i));
  }

  deleteInstance(snapshotId: string): void {
    this.#db.prepare('DELETE FROM instances WHERE snapshot_id = ?').run(snapshotId);
  }

  instances(daemonId?: string): InstanceRecord[] {
    const rows = (
      daemonId === undefined
        ? this.#db.prepare('SELECT record FROM instances ORDER BY snapshot_id').all()
        : this.#db
            .prepare('SELECT record FROM instances WHERE daemon_id = ? ORDER BY snapshot_id')
            .all(daemonId)
    ) as { record: string }[];
    return rows.map((r) => JSON.parse(r.record) as InstanceRecord);
  }

  instance(snapshotId: string): InstanceRecord | undefined {
    const r = this.#db.prepare('SELECT record FROM instances WHERE snapshot_id = ?').get(snapshotId) as
      { record: string } | undefined;
    return r === undefined ? undefined : (JSON.parse(r.record) as InstanceRecord);
  }

  close(): void {
    this.#db.close();
  }
}
