import { Transform, type Readable } from 'node:stream';
import { errorText, NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { parseReference, type Reference } from '../oci/reference.js';
import { RegistryClient, type RegistryOptions } from '../registry/client.js';

export type PushBody = Buffer | string | (() => Readable);

/**
 * What the converter and copier need of an image store: a registry repository (the registry
 * client's `Repository` has exactly this shape) or an OCI image layout directory.
 */
export interface ImageRepo {
  getManifest(tagOrDigest: string): Promise<{ digest: string; mediaType: string; bytes: Buffer }>;
  headManifest(tagOrDigest: string): Promise<{ digest: string; mediaType: string; size: number } | undefined>;
  putManifest(tagOrDigest: string, mediaType: string, bytes: Buffer): Promise<string>;
  headBlob(digest: string): Promise<number | undefined>;
  openBlob(digest: string): Promise<Readable>;
  fetchBlob(digest: string): Promise<Buffer>;
  pushBlob(
    digest: string,
    size: number,
    body: PushBody,
    opts?: { mountFrom?: string; chunkSize?: number },
  ): Promise<'exists' | 'mounted' | 'uploaded'>;
}

/** Per-side registry settings of a command (upstream's `--source-insecure`, `--plain-http`...). */
export interface RemoteOptions {
  insecure?: boolean;
  plainHttp?: boolean;
  /** Extra client options (CA files, timeouts; tests use these). */
  registry?: RegistryOptions;
}

/** Registry clients by host and settings, shared inside one run and closed at its end. */
export class Remotes {
  readonly #clients = new Map<string, RegistryClient>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  client(host: string, o: RemoteOptions = {}): RegistryClient {
    const key = JSON.stringify([host, o.insecure === true, o.plainHttp === true]);
    let c = this.#clients.get(key);
    if (c === undefined) {
      c = new RegistryClient(host, {
        ...o.registry,
        insecure: o.insecure === true,
        plainHttp: o.plainHttp === true,
        log: this.#log,
      });
      this.#clients.set(key, c);
    }
    return c;
  }

  /** A parsed reference and its repository. */
  open(ref: string, o: RemoteOptions = {}): { ref: Reference; repo: ImageRepo & { name: string } } {
    const r = parseRef(ref);
    return { ref: r, repo: this.client(r.host, o).repository(r.repository) };
  }

  async close(): Promise<void> {
    for (const c of this.#clients.values()) await c.close().catch(() => undefined);
    this.#clients.clear();
  }
}

/** parseReference with the message naming the flag's value. */
export function parseRef(s: string, what = 'image reference'): Reference {
  try {
    return parseReference(s);
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Invalid ${what} "${s}": ${errorText(e)}`, { cause: e });
  }
}

/** Run `fn`, retrying `count` more times after `delayMs` on failure (upstream's push retry). */
export async function withRetry<T>(
  what: string,
  fn: () => Promise<T>,
  count: number,
  delayMs: number,
  log: Logger,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      const permanent =
        e instanceof NydusError &&
        (e.code === 'ERR_AUTH' || e.code === 'ERR_INVALID_ARG' || e.code === 'ERR_DIGEST');
      if (attempt >= count || permanent) throw e;
      log.warn(
        `${what} failed (attempt ${attempt + 1} of ${count + 1}): ${errorText(e)}; retrying in ${delayMs} ms`,
      );
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

/**
 * A stream of blob `digest` of `repo`, opened when the stream is made but readable at once: a
 * push body that copies a blob from one repository to another.
 */
export function blobStreamOf(repo: ImageRepo, digest: string): Readable {
  const pass = new Transform({ transform: (c: Buffer, _e, cb) => cb(null, c) });
  repo.openBlob(digest).then(
    (s) => {
      s.on('error', (e: Error) => pass.destroy(e));
      s.pipe(pass);
    },
    (e: unknown) => pass.destroy(e instanceof Error ? e : new Error(String(e))),
  );
  return pass;
}
