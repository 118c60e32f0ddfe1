import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Agent, Dispatcher } from 'undici';
import { NydusError } from '../../errors/errors.js';
import { silentLogger, type Logger } from '../../log/logger.js';
import {
  classifyHttpError,
  displayUrl,
  markTransient,
  readText,
  trustedCas,
} from '../../registry/transport.js';
import type { S3Config } from '../../daemon/config/schema.js';
import type { Connection, ConnectionConfig, MirrorConfig } from './connection.js';
import { HttpBlobSource } from './http-blob.js';
import { aws4, undici } from '../../util/lazy-modules.js';

/**
 * The `s3` backend: objects `<object_prefix><blob id>` of a bucket, addressed path-style
 * (`scheme://endpoint/bucket/key`), requests signed with AWS Signature Version 4 (the `aws4`
 * library; service `s3`). Also the object-store client shared with `oss` (oss.ts): HEAD, PUT of
 * a file and GET of a whole object, used by nydusify to push and fetch blobs.
 */

/** SHA-256 of an empty payload, the `x-amz-content-sha256` of GET and HEAD. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** The keys of an s3 table this module reads (the nydusd config table, or nydusify's). */
export type S3Location = Pick<
  S3Config,
  'scheme' | 'endpoint' | 'region' | 'bucket_name' | 'object_prefix' | 'access_key_id' | 'access_key_secret'
>;

/** The network keys of a backend table. */
export type NetworkKeys = Pick<S3Config, 'skip_verify' | 'ca_cert_files' | 'timeout' | 'connect_timeout'>;

/** `host[:port]` the requests go to: `endpoint`, or AWS's regional endpoint when it is empty. */
export function s3Endpoint(cfg: Pick<S3Location, 'endpoint' | 'region'>): string {
  if (cfg.endpoint !== '') return cfg.endpoint;
  if (cfg.region === '') throw new NydusError('ERR_INVALID_ARG', 'backend s3 needs "endpoint" or "region"');
  return `s3.${cfg.region}.amazonaws.com`;
}

/** Object key of a blob: `object_prefix` + blob id. */
export function objectKey(cfg: Pick<S3Location, 'object_prefix'>, blobId: string): string {
  return `${cfg.object_prefix}${blobId}`;
}

/** An object key as a URL path (each segment percent-encoded, slashes kept). */
export function keyPath(key: string): string {
  return key
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');
}

/** Origin URL of an object: `scheme://endpoint/bucket/key` (path-style). */
export function s3ObjectUrl(cfg: S3Location, key: string): URL {
  const scheme = cfg.scheme === '' ? 'https' : cfg.scheme;
  return new URL(`${scheme}://${s3Endpoint(cfg)}/${encodeURIComponent(cfg.bucket_name)}/${keyPath(key)}`);
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** Signing region; upstream's default when empty is us-east-1. */
  region: string;
}

/** Whether the credentials sign at all (an empty key id or secret means anonymous requests). */
export function hasCredentials(id: string, secret: string): boolean {
  return id !== '' && secret !== '';
}

/**
 * Sign a request in place with SigV4: adds `x-amz-date`, `x-amz-content-sha256` (the empty
 * payload's hash unless `payloadSha256` is given) and `authorization`. Signed headers: `host`
 * (from `url`), `range` when present, the `x-amz-*` headers, and `content-md5`/`content-type`
 * when present. Other headers (user agent, proxy headers) are left out of the signature.
 */
export function signS3(
  method: string,
  url: URL,
  headers: Record<string, string>,
  cred: S3Credentials,
  opts: { date?: Date; payloadSha256?: string } = {},
): void {
  for (const k of Object.keys(headers)) {
    const l = k.toLowerCase();
    if (l === 'authorization' || l === 'x-amz-date' || l === 'x-amz-content-sha256') delete headers[k];
  }
  const signed: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    const l = k.toLowerCase();
    if (l === 'range' || l.startsWith('x-amz-') || l === 'content-md5' || l === 'content-type') signed[l] = v;
  }
  signed['host'] = url.host;
  signed['x-amz-content-sha256'] = opts.payloadSha256 ?? EMPTY_SHA256;
  const date = opts.date ?? new Date();
  signed['x-amz-date'] = date.toISOString().replace(/[:-]|\.\d{3}/g, '');
  const req = {
    host: url.host,
    path: url.pathname + url.search,
    method,
    service: 's3',
    region: cred.region === '' ? 'us-east-1' : cred.region,
    headers: signed,
    // aws4 leaves `range` out unless asked; upstream and AWS's examples sign it.
    extraHeadersToInclude: { range: true },
  };
  aws4().sign(req, {
    accessKeyId: cred.accessKeyId,
    secretAccessKey: cred.secretAccessKey,
  });
  headers['x-amz-date'] = signed['x-amz-date'];
  headers['x-amz-content-sha256'] = signed['x-amz-content-sha256'];
  headers['authorization'] = String((req.headers as Record<string, unknown>)['Authorization']);
}

/** The signer of an s3 table (undefined: anonymous). */
export function s3Signer(
  cfg: S3Location,
): ((method: string, url: URL, headers: Record<string, string>, payloadSha256?: string) => void) | undefined {
  if (!hasCredentials(cfg.access_key_id, cfg.access_key_secret)) return undefined;
  const cred = { accessKeyId: cfg.access_key_id, secretAccessKey: cfg.access_key_secret, region: cfg.region };
  return (method, url, headers, payloadSha256) =>
    signS3(method, url, headers, cred, payloadSha256 !== undefined ? { payloadSha256 } : {});
}

/** The Connection settings of a backend table (network keys, proxy, mirrors). */
export function connectionConfig(
  cfg: NetworkKeys &
    Pick<S3Config, 'retry_limit' | 'proxy'> & { mirrors?: readonly MirrorConfig[] | undefined },
): ConnectionConfig {
  return {
    skip_verify: cfg.skip_verify,
    ca_cert_files: cfg.ca_cert_files,
    timeout: cfg.timeout,
    connect_timeout: cfg.connect_timeout,
    retry_limit: cfg.retry_limit,
    proxy: cfg.proxy,
    ...(cfg.mirrors !== undefined ? { mirrors: cfg.mirrors } : {}),
  };
}

/** The blob source of an `s3` backend table over `conn`: HEAD for sizes, signed ranged GETs for data. */
export function s3BlobSource(cfg: S3Location, conn: Connection): HttpBlobSource {
  if (cfg.bucket_name === '') throw new NydusError('ERR_INVALID_ARG', 'backend s3 needs "bucket_name"');
  s3Endpoint(cfg);
  const sign = s3Signer(cfg);
  return new HttpBlobSource({
    conn,
    kind: 's3',
    urlFor: (blobId) => s3ObjectUrl(cfg, objectKey(cfg, blobId)),
    ...(sign !== undefined
      ? { sign: (method: string, url: URL, h: Record<string, string>) => sign(method, url, h) }
      : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// Object-store client (nydusify): HEAD, PUT of a file, GET of a whole object. Direct (no proxy).

/** What differs between s3 and oss for the object-store client. */
export interface ObjectProtocol {
  kind: 's3' | 'oss';
  /** For messages: `s3 bucket "b"`. */
  where: string;
  key(blobId: string): string;
  url(key: string): URL;
  /** Sign a request; `payload` describes the body of a PUT. Absent: anonymous. */
  sign?(
    method: string,
    url: URL,
    key: string,
    headers: Record<string, string>,
    payload?: { sha256: string; md5: string },
  ): void;
}

/** The defaults of the network keys (as the config schema has them). */
const NET_DEFAULTS: NetworkKeys = { skip_verify: false, ca_cert_files: [], timeout: 5, connect_timeout: 5 };

/** An S3-style error body's `<Code>` and `<Message>`. */
function xmlError(body: string): string {
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const msg = /<Message>([^<]*)<\/Message>/.exec(body)?.[1];
  if (code === undefined) return '';
  return msg !== undefined ? `${code}: ${msg}` : code;
}

/** sha256 (hex) and md5 (base64) of a file, in one pass. */
async function fileDigests(path: string): Promise<{ sha256: string; md5: string; size: number }> {
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    sha.update(chunk);
    md5.update(chunk);
    size += chunk.length;
  }
  return { sha256: sha.digest('hex'), md5: md5.digest('base64'), size };
}

/**
 * A client of one bucket (s3 or oss): what nydusify needs to push blobs to an object store and
 * read them back. Requests go straight to the endpoint (never through a proxy).
 */
export class ObjectStore {
  readonly protocol: ObjectProtocol;
  readonly #agent: Agent;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #connectTimeoutMs: number;

  constructor(protocol: ObjectProtocol, net: Partial<NetworkKeys> = {}, log: Logger = silentLogger) {
    const n = { ...NET_DEFAULTS, ...net };
    this.protocol = protocol;
    this.#log = log;
    // Uploads of big blobs need more than the read timeout of a chunk request.
    this.#timeoutMs = Math.max(n.timeout, 30) * 1000;
    this.#connectTimeoutMs = Math.max(n.connect_timeout, 1) * 1000;
    const ca = trustedCas(n.ca_cert_files);
    this.#agent = new (undici().Agent)({
      connect: {
        timeout: this.#connectTimeoutMs,
        rejectUnauthorized: !n.skip_verify,
        ...(ca !== undefined ? { ca } : {}),
      },
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
      connections: 8,
    });
  }

  /** Object URL of a blob (for messages and descriptors). */
  urlOf(blobId: string): URL {
    return this.protocol.url(this.protocol.key(blobId));
  }

  async #send(
    method: 'HEAD' | 'GET' | 'PUT',
    blobId: string,
    what: string,
    headers: Record<string, string>,
    body?: { stream: () => Readable; sha256: string; md5: string },
  ): Promise<Dispatcher.ResponseData> {
    const key = this.protocol.key(blobId);
    const url = this.protocol.url(key);
    const h: Record<string, string> = { 'user-agent': 'nydusify', ...headers };
    this.protocol.sign?.(
      method,
      url,
      key,
      h,
      body !== undefined ? { sha256: body.sha256, md5: body.md5 } : undefined,
    );
    try {
      return await this.#agent.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method,
        headers: h,
        body: body?.stream() ?? null,
      });
    } catch (e) {
      throw classifyHttpError(e, what, url, this.#connectTimeoutMs, this.#timeoutMs);
    }
  }

  /** A NydusError for an unexpected answer (its body drained). */
  async #fail(res: Dispatcher.ResponseData, what: string, url: URL): Promise<NydusError> {
    const text = await readText(res, 16_384).catch(() => '');
    const detail = xmlError(text);
    const msg = `${what} (${displayUrl(url)}): HTTP ${res.statusCode}${detail !== '' ? ` ${detail}` : ''}`;
    if (res.statusCode === 401 || res.statusCode === 403)
      return new NydusError(
        'ERR_AUTH',
        `${msg}; check access_key_id and access_key_secret of the ${this.protocol.kind} backend config`,
      );
    if (res.statusCode === 404) return new NydusError('ERR_NOT_FOUND', msg);
    const err = new NydusError('ERR_IO', msg);
    return res.statusCode >= 500 || res.statusCode === 429 ? markTransient(err) : err;
  }

  /** Size of a blob's object, or undefined when it does not exist. */
  async size(blobId: string): Promise<number | undefined> {
    const what = `HEAD blob ${blobId} of ${this.protocol.where}`;
    const res = await this.#send('HEAD', blobId, what, {});
    if (res.statusCode === 404) {
      res.body.resume();
      return undefined;
    }
    if (res.statusCode !== 200) throw await this.#fail(res, what, this.urlOf(blobId));
    res.body.resume();
    const len = Number(res.headers['content-length']);
    if (!Number.isSafeInteger(len) || len < 0)
      throw new NydusError('ERR_FORMAT', `${what}: no valid Content-Length in the answer`);
    return len;
  }

  /** Upload a file as the object of `blobId` (one signed PUT). */
  async upload(blobId: string, path: string): Promise<void> {
    const what = `PUT blob ${blobId} to ${this.protocol.where}`;
    const d = await fileDigests(path);
    const size = (await stat(path)).size;
    if (size !== d.size) throw new NydusError('ERR_IO', `${what}: "${path}" changed while being read`);
    const t0 = Date.now();
    const res = await this.#send(
      'PUT',
      blobId,
      what,
      {
        'content-length': String(size),
        'content-type': 'application/octet-stream',
        'content-md5': d.md5,
      },
      { stream: () => createReadStream(path), sha256: d.sha256, md5: d.md5 },
    );
    if (res.statusCode !== 200 && res.statusCode !== 201 && res.statusCode !== 204)
      throw await this.#fail(res, what, this.urlOf(blobId));
    res.body.resume();
    this.#log.debug(
      `Uploaded blob ${blobId} (${size} bytes) to ${this.protocol.where} in ${Date.now() - t0} ms`,
    );
  }

  /** The whole object of `blobId` as a stream (ERR_NOT_FOUND when missing). */
  async download(blobId: string): Promise<Readable> {
    const what = `GET blob ${blobId} of ${this.protocol.where}`;
    const res = await this.#send('GET', blobId, what, {});
    if (res.statusCode !== 200) throw await this.#fail(res, what, this.urlOf(blobId));
    return res.body;
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

/** The object-store client of an s3 table (nydusify's `--backend-config`). */
export function s3ObjectStore(cfg: S3Location & Partial<NetworkKeys>, log?: Logger): ObjectStore {
  if (cfg.bucket_name === '') throw new NydusError('ERR_INVALID_ARG', 'backend s3 needs "bucket_name"');
  s3Endpoint(cfg);
  const sign = s3Signer(cfg);
  return new ObjectStore(
    {
      kind: 's3',
      where: `s3 bucket "${cfg.bucket_name}"`,
      key: (blobId) => objectKey(cfg, blobId),
      url: (key) => s3ObjectUrl(cfg, key),
      ...(sign !== undefined
        ? {
            sign: (
              method: string,
              url: URL,
              _key: string,
              h: Record<string, string>,
              p?: { sha256: string },
            ) => sign(method, url, h, p?.sha256),
          }
        : {}),
    },
    cfg,
    log,
  );
}
