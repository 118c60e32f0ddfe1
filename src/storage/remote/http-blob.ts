import { NydusError, errorText } from '../../errors/errors.js';
import type { BlobInfo } from '../../format/model.js';
import { errorDetail } from '../../registry/auth.js';
import {
  copyBodyRange,
  discard,
  displayUrl,
  headerString,
  markTransient,
  otherRange,
  readText,
} from '../../registry/transport.js';
import type { BlobReader, BlobSource, ReadOptions } from '../blob-source.js';
import { bodyError, type Connection, type Response } from './connection.js';

/** Ranged requests one backend keeps in flight at most, by default. */
const DEFAULT_MAX_INFLIGHT = 8;

export interface HttpBlobSourceOptions {
  conn: Connection;
  /** 'http-proxy' | 's3' | 'oss', for messages and metrics. */
  kind: string;
  /** Origin URL of a blob. */
  urlFor(blobId: string): URL;
  /** Add auth headers for a request to `url` (after mirror rewriting); absent = anonymous. */
  sign?(method: string, url: URL, headers: Record<string, string>): void;
  /** Requests in flight at most (default 8). */
  maxInflight?: number;
}

/** A counting semaphore bounding the requests in flight. */
export class Limiter {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(n: number) {
    this.#free = Math.max(1, n);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#free++;
    }
  }
}

/** Throw the error an unexpected status means; 5xx and 429 are transient. */
export async function statusError(res: Response, what: string, where: string): Promise<never> {
  const text = await readText(res, 64 * 1024).catch(() => '');
  const status = res.statusCode;
  const detail = errorDetail(text);
  if (status === 404)
    throw new NydusError('ERR_NOT_FOUND', `${what}: not found at ${where} (HTTP 404${detail})`);
  if (status === 401 || status === 403)
    throw new NydusError('ERR_AUTH', `${what}: access denied by ${where} (HTTP ${status}${detail})`);
  const err = new NydusError('ERR_NETWORK', `${what}: ${where} answered HTTP ${status}${detail}`);
  throw status >= 500 || status === 429 ? markTransient(err) : err;
}

/**
 * Copy body bytes [skip, skip + out.length) into `out`; a short body, or a long one when `exact`,
 * is a transient error (retried).
 */
export async function copyBody(
  res: Response,
  out: Buffer,
  skip: number,
  exact: boolean,
  what: string,
): Promise<void> {
  let got: number | 'long';
  try {
    got = await copyBodyRange(res.body, out, skip, exact);
  } catch (e) {
    throw bodyError(what, `reading the body failed: ${errorText(e)}`, e);
  }
  if (got === 'long') throw bodyError(what, `the body is longer than the ${out.length} bytes asked for`);
  if (got < out.length) throw bodyError(what, `short body: ${got} of ${out.length} bytes`);
}

/**
 * Blobs served over plain HTTP(S): HEAD for the size, ranged GETs for the data, through a
 * Connection (proxy, mirrors, retry budgets). Used by the http-proxy, s3 and oss backends.
 */
export class HttpBlobSource implements BlobSource {
  readonly #o: HttpBlobSourceOptions;
  readonly #limiter: Limiter;

  constructor(o: HttpBlobSourceOptions) {
    this.#o = o;
    this.#limiter = new Limiter(o.maxInflight ?? DEFAULT_MAX_INFLIGHT);
  }

  #signer(method: string): ((url: URL, headers: Record<string, string>) => void) | undefined {
    const o = this.#o;
    if (o.sign === undefined) return undefined;
    return (url, headers) => o.sign?.(method, url, headers);
  }

  async open(blob: BlobInfo): Promise<BlobReader> {
    const { conn, kind } = this.#o;
    const id = blob.blobId;
    const url = this.#o.urlFor(id);
    const where = `${kind} ${displayUrl(url)}`;
    const what = `HEAD blob ${id} of ${kind} backend`;
    let size: number;
    try {
      size = await this.#limiter.run(() =>
        conn.withRetries(what, false, async ({ noProxy }) => {
          const res = await conn.send({
            method: 'HEAD',
            url,
            headers: {},
            what,
            noProxy,
            sign: this.#signer('HEAD'),
          });
          if (res.statusCode !== 200) return statusError(res, what, where);
          await res.body.dump();
          const len = Number(headerString(res.headers['content-length']));
          if (!Number.isSafeInteger(len) || len < 0)
            throw new NydusError('ERR_NETWORK', `${what}: ${where} gave no valid Content-Length`);
          return len;
        }),
      );
    } catch (e) {
      throw new NydusError(
        e instanceof NydusError ? e.code : 'ERR_IO',
        `Cannot open blob ${id}: ${errorText(e)}`,
        {
          cause: e,
        },
      );
    }
    const read = (offset: number, length: number, into?: Buffer, opts?: ReadOptions): Promise<Buffer> => {
      if (
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length < 0 ||
        offset + length > size
      ) {
        return Promise.reject(
          new NydusError(
            'ERR_FORMAT',
            `Read of ${length} bytes at ${offset} is past the end of blob ${id} (${size} bytes)`,
          ),
        );
      }
      const out =
        into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
      if (length === 0) return Promise.resolve(out);
      return this.#limiter.run(() => this.#readRange(url, where, id, offset, out, opts ?? {}));
    };
    return { size, read, close: () => Promise.resolve() };
  }

  async #readRange(
    url: URL,
    where: string,
    id: string,
    offset: number,
    out: Buffer,
    opts: ReadOptions,
  ): Promise<Buffer> {
    const { conn, kind } = this.#o;
    const end = offset + out.length - 1;
    const what = `GET blob ${id} bytes ${offset}-${end} of ${kind} backend`;
    const prefetch = opts.prefetch === true;
    await conn.withRetries(
      what,
      prefetch,
      async ({ noProxy }) => {
        const started = Date.now();
        const res = await conn.send({
          method: 'GET',
          url,
          headers: { range: `bytes=${offset}-${end}` },
          what,
          prefetch,
          noProxy,
          signal: opts.signal,
          sign: this.#signer('GET'),
        });
        if (res.statusCode === 206) {
          const cr = otherRange(res, offset, end);
          if (cr !== undefined) {
            discard(res.body);
            throw markTransient(
              new NydusError('ERR_NETWORK', `${what}: ${where} answered with another range "${cr}"`),
            );
          }
          await copyBody(res, out, 0, true, what);
        } else if (res.statusCode === 200) {
          await copyBody(res, out, offset, false, what);
        } else {
          await statusError(res, what, where);
        }
        conn.noteDone(what, out.length, started);
      },
      opts.signal,
    );
    return out;
  }

  close(): Promise<void> {
    return this.#o.conn.close();
  }
}
