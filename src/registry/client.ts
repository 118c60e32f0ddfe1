import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { NydusError, errorText } from '../errors/errors.js';
import {
  parseManifestOrIndex,
  selectPlatform,
  hostPlatform,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../oci/manifest.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import { checkDigest, isDigest } from '../oci/reference.js';
import { repositoryScope } from './auth.js';
import type { Credentials } from './docker-config.js';
import {
  Transport,
  displayUrl,
  headerString,
  markTransient,
  readText,
  copyBodyRange,
  discard,
  otherRange,
  type HttpRequest,
  type RouteOptions,
  type HttpResponse,
  type RegistryOptions,
} from './transport.js';

export type { RegistryOptions } from './transport.js';
export type { Credentials } from './docker-config.js';

/** Manifests larger than this are refused (the distribution registry's own limit is 4 MiB). */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;
/** Default PATCH chunk size of blob uploads. */
export const DEFAULT_UPLOAD_CHUNK = 16 * 1024 * 1024;

const REPO_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;

function newHash(digest: string): Hash {
  return createHash(digest.slice(0, digest.indexOf(':')));
}

function digestOf(algo: string, bytes: Buffer): string {
  return `${algo}:${createHash(algo).update(bytes).digest('hex')}`;
}

function contentType(res: HttpResponse): string | undefined {
  const v = headerString(res.headers['content-type']);
  return v?.split(';')[0]?.trim();
}

/** A client for one registry host. Close it to release its connections. */
export class RegistryClient {
  readonly host: string;
  /** @internal */
  readonly transport: Transport;

  constructor(host: string, opts: RegistryOptions = {}) {
    this.transport = new Transport(host, opts);
    this.host = host;
  }

  repository(name: string): Repository {
    return new Repository(this.transport, name);
  }

  /** Replace the credentials (hot update); cached tokens are dropped. */
  setCredentials(c: Credentials | undefined): void {
    this.transport.auth.setCredentials(c);
  }

  /** Replace the ready-made bearer token (nydusd `registry_token`). */
  setRegistryToken(token: string | undefined): void {
    this.transport.auth.setRegistryToken(token);
  }

  /** Bearer tokens fetched from the token server so far. */
  get tokensFetched(): number {
    return this.transport.auth.tokensFetched;
  }

  /** The scheme in use ('http' after an HTTPS-to-HTTP fallback). */
  get scheme(): 'http' | 'https' {
    return this.transport.scheme;
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}

export interface ResolvedImage {
  manifest: ImageManifest;
  digest: string;
  mediaType: string;
  bytes: Buffer;
  index?: { index: ImageIndex; digest: string; mediaType: string; bytes: Buffer };
}

export type PushBody = Buffer | string | (() => Readable);

/** One repository of a registry: manifests and blobs. */
export class Repository {
  readonly name: string;
  private readonly t: Transport;
  private readonly pull: string[];
  private readonly push: string[];

  constructor(transport: Transport, name: string) {
    if (!REPO_NAME.test(name)) {
      throw new NydusError('ERR_INVALID_ARG', `Invalid repository name "${name}"`);
    }
    this.t = transport;
    this.name = name;
    this.pull = [repositoryScope(name, 'pull')];
    this.push = [repositoryScope(name, 'push')];
  }

  private get where(): string {
    return `${this.t.host}/${this.name}`;
  }

  private checkRef(tagOrDigest: string): void {
    if (isDigest(tagOrDigest) || TAG.test(tagOrDigest)) return;
    throw new NydusError('ERR_INVALID_ARG', `Invalid tag or digest "${tagOrDigest}"`);
  }

  // ---------------------------------------------------------------- manifests

  /** GET a manifest or index; the digest of what came back is verified. */
  async getManifest(tagOrDigest: string): Promise<{ digest: string; mediaType: string; bytes: Buffer }> {
    this.checkRef(tagOrDigest);
    const req: HttpRequest = {
      method: 'GET',
      url: `/v2/${this.name}/manifests/${tagOrDigest}`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      scopes: this.pull,
      what: `GET manifest "${tagOrDigest}" of ${this.where}`,
    };
    return this.t.retry(req.what, async () => {
      const res = await this.t.request(req);
      if (res.statusCode !== 200) return this.t.fail(res, req, `Manifest "${tagOrDigest}" of ${this.where}`);
      const bytes = await this.readAll(res, req, MAX_MANIFEST_SIZE);
      const algo = isDigest(tagOrDigest) ? tagOrDigest.slice(0, tagOrDigest.indexOf(':')) : 'sha256';
      const digest = digestOf(algo, bytes);
      if (isDigest(tagOrDigest) && digest !== tagOrDigest) {
        throw new NydusError(
          'ERR_DIGEST',
          `${req.what}: the registry sent a manifest whose digest is ${digest}`,
        );
      }
      const served = headerString(res.headers['docker-content-digest']);
      if (served !== undefined && served.startsWith(`${algo}:`) && served !== digest) {
        throw new NydusError(
          'ERR_DIGEST',
          `${req.what}: the registry says the digest is ${served} but the bytes it sent have ${digest}`,
        );
      }
      let mediaType = contentType(res);
      if (mediaType === undefined || !MANIFEST_ACCEPT.includes(mediaType)) {
        mediaType = parseManifestOrIndex(bytes, undefined).mediaType;
      }
      return { digest, mediaType, bytes };
    });
  }

  /** HEAD a manifest: its digest, media type and size, or undefined when it does not exist. */
  async headManifest(
    tagOrDigest: string,
  ): Promise<{ digest: string; mediaType: string; size: number } | undefined> {
    this.checkRef(tagOrDigest);
    const req: HttpRequest = {
      method: 'HEAD',
      url: `/v2/${this.name}/manifests/${tagOrDigest}`,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      scopes: this.pull,
      what: `HEAD manifest "${tagOrDigest}" of ${this.where}`,
    };
    const head = await this.t.retry(req.what, async () => {
      const res = await this.t.request(req);
      await res.body.dump();
      if (res.statusCode === 404) return null;
      if (res.statusCode !== 200) return this.t.fail(res, req);
      return {
        digest: headerString(res.headers['docker-content-digest']),
        mediaType: contentType(res),
        size: Number(headerString(res.headers['content-length'])),
      };
    });
    if (head === null) return undefined;
    if (
      head.digest === undefined ||
      !isDigest(head.digest) ||
      head.mediaType === undefined ||
      !(head.size >= 0)
    ) {
      // The registry did not say enough: ask for the manifest itself.
      const m = await this.getManifest(tagOrDigest);
      return { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
    }
    if (isDigest(tagOrDigest) && head.digest !== tagOrDigest) {
      throw new NydusError('ERR_DIGEST', `${req.what}: the registry says its digest is ${head.digest}`);
    }
    return { digest: head.digest, mediaType: head.mediaType, size: head.size };
  }

  /** PUT a manifest or index under a tag (or its digest); returns its digest. */
  async putManifest(tagOrDigest: string, mediaType: string, bytes: Buffer): Promise<string> {
    this.checkRef(tagOrDigest);
    const algo = isDigest(tagOrDigest) ? tagOrDigest.slice(0, tagOrDigest.indexOf(':')) : 'sha256';
    const digest = digestOf(algo, bytes);
    if (isDigest(tagOrDigest) && digest !== tagOrDigest) {
      throw new NydusError(
        'ERR_DIGEST',
        `Manifest to push as ${tagOrDigest} to ${this.where} has digest ${digest}`,
      );
    }
    const req: HttpRequest = {
      method: 'PUT',
      url: `/v2/${this.name}/manifests/${tagOrDigest}`,
      headers: { 'content-type': mediaType },
      body: bytes,
      scopes: this.push,
      what: `PUT manifest "${tagOrDigest}" to ${this.where}`,
    };
    await this.t.retry(req.what, async () => {
      const res = await this.t.request(req);
      if (res.statusCode !== 201 && res.statusCode !== 200) return this.t.fail(res, req);
      await res.body.dump();
      const served = headerString(res.headers['docker-content-digest']);
      if (served !== undefined && served.startsWith(`${algo}:`) && served !== digest) {
        throw new NydusError('ERR_DIGEST', `${req.what}: the registry stored it as ${served}, not ${digest}`);
      }
    });
    return digest;
  }

  /**
   * Resolve a tag or digest to one image manifest: through an index (OCI or Docker manifest
   * list) to the manifest of `platform` (default: linux and this machine's architecture),
   * index entries accepted by `prefer` first (see selectPlatform).
   */
  async resolveImage(
    tagOrDigest: string,
    platform?: Platform,
    prefer?: (d: Descriptor) => boolean,
  ): Promise<ResolvedImage> {
    const top = await this.getManifest(tagOrDigest);
    const parsed = parseManifestOrIndex(top.bytes, top.mediaType);
    if (parsed.kind === 'manifest') {
      return { manifest: parsed.manifest, digest: top.digest, mediaType: parsed.mediaType, bytes: top.bytes };
    }
    const want = platform ?? hostPlatform();
    const desc = selectPlatform(parsed.index, want, `index ${tagOrDigest} of ${this.where}`, prefer);
    const m = await this.getManifest(desc.digest);
    const inner = parseManifestOrIndex(m.bytes, m.mediaType);
    if (inner.kind !== 'manifest') {
      throw new NydusError(
        'ERR_FORMAT',
        `Index ${tagOrDigest} of ${this.where} points to another index ${desc.digest}`,
      );
    }
    return {
      manifest: inner.manifest,
      digest: m.digest,
      mediaType: inner.mediaType,
      bytes: m.bytes,
      index: { index: parsed.index, digest: top.digest, mediaType: parsed.mediaType, bytes: top.bytes },
    };
  }

  // ---------------------------------------------------------------- blobs

  /** Size of a blob, or undefined when the repository does not have it. */
  async headBlob(digest: string): Promise<number | undefined> {
    return this.headBlobWith(digest, this.pull, true);
  }

  private async headBlobWith(
    digest: string,
    scopes: readonly string[],
    routed = false,
  ): Promise<number | undefined> {
    checkDigest(digest, 'blob digest');
    const base: HttpRequest = {
      method: 'HEAD',
      url: `/v2/${this.name}/blobs/${digest}`,
      scopes,
      what: `HEAD blob ${digest} of ${this.where}`,
    };
    return this.blobRetry(base.what, false, routed, undefined, async (route) => {
      const req: HttpRequest = route !== undefined ? { ...base, route } : base;
      let res = await this.t.request(req);
      for (let hops = 0; isRedirect(res.statusCode) && hops < 5; hops++) {
        const loc = this.location(res, req);
        await res.body.dump();
        res = await this.t.request({ ...req, url: this.rewriteRedirect(loc) });
      }
      await res.body.dump();
      if (res.statusCode === 404) return undefined;
      if (res.statusCode !== 200) return this.t.fail(res, req);
      const len = Number(headerString(res.headers['content-length']));
      if (!Number.isSafeInteger(len) || len < 0) {
        throw new NydusError('ERR_REGISTRY', `${req.what}: the registry gave no valid Content-Length`);
      }
      return len;
    });
  }

  /**
   * GET a blob (whole or a range), following redirects to blob storage. The storage URL is
   * cached per digest; when storage refuses it (401/403, an expired signature) the cache entry
   * is dropped and the registry is asked again.
   */
  private async getBlob(
    digest: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    what: string,
    route?: RouteOptions,
  ): Promise<{ res: HttpResponse; req: HttpRequest }> {
    const req: HttpRequest = {
      method: 'GET',
      url: `/v2/${this.name}/blobs/${digest}`,
      headers,
      scopes: this.pull,
      signal,
      what,
      ...(route !== undefined ? { route } : {}),
    };
    const cacheKey = `${this.name}@${digest}`;
    const cached = this.t.redirects.get(cacheKey);
    if (cached !== undefined) {
      const res = await this.t.request({ ...req, url: new URL(cached) });
      if (res.statusCode !== 401 && res.statusCode !== 403) return { res, req };
      await res.body.dump();
      this.t.redirects.delete(cacheKey);
      this.t.log.debug(
        `${what}: blob storage refused the cached redirect (HTTP ${res.statusCode}); asking the registry`,
      );
    }
    let res = await this.t.request(req);
    for (let hops = 0; isRedirect(res.statusCode); hops++) {
      if (hops >= 5) {
        await res.body.dump();
        throw new NydusError('ERR_REGISTRY', `${what}: too many redirects`);
      }
      const loc = this.rewriteRedirect(this.location(res, req));
      await res.body.dump();
      this.t.redirects.set(cacheKey, loc.href);
      res = await this.t.request({ ...req, url: loc });
      if (res.statusCode === 401 || res.statusCode === 403) {
        this.t.redirects.delete(cacheKey);
        const text = await readText(res, 4096).catch(() => '');
        throw markTransient(
          new NydusError(
            'ERR_AUTH',
            `${what}: blob storage ${displayUrl(loc)} refused the redirected request (HTTP ${res.statusCode}${text !== '' ? `: ${text.replace(/\s+/g, ' ').slice(0, 200)}` : ''})`,
          ),
        );
      }
    }
    return { res, req };
  }

  private location(res: HttpResponse, req: HttpRequest): URL {
    const loc = headerString(res.headers['location']);
    if (loc === undefined || loc === '') {
      throw new NydusError('ERR_REGISTRY', `${req.what}: HTTP ${res.statusCode} without a Location header`);
    }
    try {
      return new URL(loc, this.t.resolve(req.url));
    } catch {
      throw new NydusError('ERR_REGISTRY', `${req.what}: invalid Location header`);
    }
  }

  /**
   * Retry a blob request: under the backend connection's budgets (and routed through it) when
   * `routed` and there is one, else with the transport's own retries.
   */
  private blobRetry<T>(
    what: string,
    prefetch: boolean,
    routed: boolean,
    signal: AbortSignal | undefined,
    fn: (route: RouteOptions | undefined) => Promise<T>,
  ): Promise<T> {
    const conn = this.t.opts.connection;
    if (routed && conn !== undefined) {
      return conn.withRetries(what, prefetch, ({ noProxy }) => fn({ prefetch, noProxy }), signal);
    }
    return this.t.retry(what, () => fn(undefined), signal);
  }

  /** Apply blobUrlScheme / blobRedirectedHost to a redirect target (as nydusd does). */
  private rewriteRedirect(u: URL): URL {
    const scheme = this.t.opts.blobUrlScheme;
    const host = this.t.opts.blobRedirectedHost;
    if ((scheme === undefined || scheme === '') && (host === undefined || host === '')) return u;
    // URL refuses protocol changes between special and other schemes; build the string anew.
    const proto = scheme !== undefined && scheme !== '' ? `${scheme.replace(/:$/, '')}:` : u.protocol;
    const h = host !== undefined && host !== '' ? host : u.host;
    return new URL(`${proto}//${h}${u.pathname}${u.search}`);
  }

  /**
   * Read `length` bytes of a blob at `offset` with a ranged GET. Returns exactly `length` bytes
   * (in `into` when given) or throws; a server that ignores the range is handled by skipping.
   */
  async readBlobRange(
    digest: string,
    offset: number,
    length: number,
    opts: {
      into?: Buffer | undefined;
      signal?: AbortSignal | undefined;
      prefetch?: boolean | undefined;
    } = {},
  ): Promise<Buffer> {
    checkDigest(digest, 'blob digest');
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new NydusError('ERR_INVALID_ARG', `Invalid blob range offset ${offset} length ${length}`);
    }
    if (opts.into !== undefined && opts.into.length < length) {
      throw new NydusError(
        'ERR_INVALID_ARG',
        `Buffer of ${opts.into.length} bytes is too small for ${length}`,
      );
    }
    const out = opts.into !== undefined ? opts.into.subarray(0, length) : Buffer.allocUnsafe(length);
    if (length === 0) return out;
    const end = offset + length - 1;
    const what = `GET blob ${digest} of ${this.where} bytes ${offset}-${end}`;
    const conn = this.t.opts.connection;
    await this.blobRetry(what, opts.prefetch === true, true, opts.signal, async (route) => {
      const started = Date.now();
      const { res, req } = await this.getBlob(
        digest,
        { range: `bytes=${offset}-${end}` },
        opts.signal,
        what,
        route,
      );
      if (res.statusCode === 206) {
        const cr = otherRange(res, offset, end);
        if (cr !== undefined) {
          discard(res.body);
          throw new NydusError('ERR_REGISTRY', `${what}: the registry answered with another range "${cr}"`);
        }
        await this.copyBody(res, req, out, 0);
        conn?.noteDone(what, length, started);
        return;
      }
      if (res.statusCode === 200) {
        // The range was ignored: skip to the offset and keep what was asked.
        this.t.log.debug(`${what}: the server ignored the Range header; skipping ${offset} bytes`);
        const total = Number(headerString(res.headers['content-length']) ?? NaN);
        if (Number.isFinite(total) && total < offset + length) {
          discard(res.body);
          throw new NydusError(
            'ERR_REGISTRY',
            `${what}: the range is beyond the end of the ${total}-byte blob`,
          );
        }
        await this.copyBody(res, req, out, offset);
        conn?.noteDone(what, length, started);
        return;
      }
      if (res.statusCode === 416) {
        await res.body.dump();
        throw new NydusError('ERR_REGISTRY', `${what}: the range is beyond the end of the blob (HTTP 416)`);
      }
      return this.t.fail(res, req, `Blob ${digest} of ${this.where}`);
    });
    return out;
  }

  /**
   * Copy body bytes [skip, skip + out.length) into out. More bytes than that in a 206 answer, or
   * fewer in any answer, is an error; a 200 answer's tail is discarded.
   */
  private async copyBody(res: HttpResponse, req: HttpRequest, out: Buffer, skip: number): Promise<void> {
    const body = res.body as Readable;
    let got: number | 'long';
    try {
      got = await copyBodyRange(body, out, skip, res.statusCode === 206);
    } catch (e) {
      discard(body);
      throw this.t.classify(e, req.what, this.t.resolve(req.url));
    }
    if (got === 'long') {
      throw new NydusError(
        'ERR_REGISTRY',
        `${req.what}: the registry sent more than the ${out.length} bytes asked for`,
      );
    }
    if (got !== out.length) {
      discard(body);
      throw markTransient(
        new NydusError('ERR_NETWORK', `${req.what}: the response ended after ${got} of ${out.length} bytes`),
      );
    }
  }

  /** Read a whole body, at most `limit` bytes. */
  private async readAll(res: HttpResponse, req: HttpRequest, limit: number): Promise<Buffer> {
    const declared = Number(headerString(res.headers['content-length']) ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      discard(res.body);
      throw new NydusError('ERR_FORMAT', `${req.what}: ${declared} bytes is more than the limit of ${limit}`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > limit) {
          throw new NydusError('ERR_FORMAT', `${req.what}: more than the limit of ${limit} bytes`);
        }
        chunks.push(chunk);
      }
    } catch (e) {
      discard(res.body);
      throw this.t.classify(e, req.what, this.t.resolve(req.url));
    }
    if (Number.isFinite(declared) && total !== declared) {
      throw markTransient(
        new NydusError('ERR_NETWORK', `${req.what}: the response ended after ${total} of ${declared} bytes`),
      );
    }
    return Buffer.concat(chunks, total);
  }

  /**
   * The whole blob as a stream. The stream fails (never ends normally) when the bytes do not
   * have the digest, or fewer bytes than the registry announced arrive.
   */
  async openBlob(digest: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    checkDigest(digest, 'blob digest');
    const what = `GET blob ${digest} of ${this.where}`;
    const { res } = await this.t.retry(
      what,
      async () => {
        const r = await this.getBlob(digest, {}, opts.signal, what);
        if (r.res.statusCode !== 200) return this.t.fail(r.res, r.req, `Blob ${digest} of ${this.where}`);
        return r;
      },
      opts.signal,
    );
    const declared = Number(headerString(res.headers['content-length']) ?? NaN);
    const verifier = new VerifyDigest(digest, Number.isFinite(declared) ? declared : undefined, what);
    const body = res.body;
    body.on('error', (e) => verifier.destroy(this.t.classify(e, what)));
    // A consumer that stops early closes the verifier; the connection is then dropped.
    verifier.on('close', () => {
      if (!body.readableEnded) discard(body);
    });
    body.pipe(verifier);
    return verifier;
  }

  /** The whole blob in memory, digest-verified. */
  async fetchBlob(digest: string): Promise<Buffer> {
    checkDigest(digest, 'blob digest');
    const what = `GET blob ${digest} of ${this.where}`;
    return this.t.retry(what, async () => {
      const { res, req } = await this.getBlob(digest, {}, undefined, what);
      if (res.statusCode !== 200) return this.t.fail(res, req, `Blob ${digest} of ${this.where}`);
      const bytes = await this.readAll(res, req, Number.MAX_SAFE_INTEGER);
      const got = digestOf(digest.slice(0, digest.indexOf(':')), bytes);
      if (got !== digest) {
        throw new NydusError('ERR_DIGEST', `${what}: the ${bytes.length} bytes received have digest ${got}`);
      }
      return bytes;
    });
  }

  /**
   * Push a blob: nothing when the repository has it already ('exists'), a cross-repository
   * mount from `mountFrom` on the same registry when that works ('mounted'), else an upload
   * session: POST, PATCH in chunks, PUT with the digest ('uploaded'). The data is checked
   * against `digest` and `size` before the upload is committed.
   */
  async pushBlob(
    digest: string,
    size: number,
    body: PushBody,
    opts: { mountFrom?: string; chunkSize?: number } = {},
  ): Promise<'exists' | 'mounted' | 'uploaded'> {
    checkDigest(digest, 'blob digest');
    if (!Number.isSafeInteger(size) || size < 0)
      throw new NydusError('ERR_INVALID_ARG', `Invalid blob size ${size}`);
    const chunkSize = opts.chunkSize ?? DEFAULT_UPLOAD_CHUNK;
    if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
      throw new NydusError('ERR_INVALID_ARG', `Invalid upload chunk size ${chunkSize}`);
    }
    if (Buffer.isBuffer(body) && body.length !== size) {
      throw new NydusError('ERR_INVALID_ARG', `Blob ${digest} has ${body.length} bytes, not ${size}`);
    }
    const scopes = [...this.push];
    const mountFrom =
      opts.mountFrom !== undefined && opts.mountFrom !== this.name ? opts.mountFrom : undefined;
    if (mountFrom !== undefined) {
      if (!REPO_NAME.test(mountFrom))
        throw new NydusError('ERR_INVALID_ARG', `Invalid repository name "${mountFrom}"`);
      scopes.push(repositoryScope(mountFrom, 'pull'));
    }
    const have = await this.headBlobWith(digest, scopes);
    if (have !== undefined) {
      if (have !== size) {
        this.t.log.warn(`Blob ${digest} in ${this.where} has ${have} bytes, the pusher says ${size}`);
      }
      return 'exists';
    }

    // Start the session (or mount).
    const start: HttpRequest = {
      method: 'POST',
      url:
        mountFrom !== undefined
          ? `/v2/${this.name}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(mountFrom)}`
          : `/v2/${this.name}/blobs/uploads/`,
      headers: { 'content-length': '0' },
      scopes,
      what: `${mountFrom !== undefined ? `Mount blob ${digest} from ${mountFrom} into` : `Start upload of blob ${digest} to`} ${this.where}`,
    };
    const started = await this.t.retry(start.what, async () => {
      const res = await this.t.request(start);
      if (res.statusCode === 201 && mountFrom !== undefined) {
        await res.body.dump();
        return 'mounted' as const;
      }
      if (res.statusCode !== 202) return this.t.fail(res, start);
      const loc = this.location(res, start);
      await res.body.dump();
      return loc;
    });
    if (started === 'mounted') return 'mounted';
    let location: URL = started;

    const hash = newHash(digest);
    let offset = 0;
    const patch = async (chunk: Buffer): Promise<void> => {
      hash.update(chunk);
      const req: HttpRequest = {
        method: 'PATCH',
        url: location,
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${offset}-${offset + chunk.length - 1}`,
          'content-length': String(chunk.length),
        },
        body: chunk,
        scopes,
        what: `Upload bytes ${offset}-${offset + chunk.length - 1} of blob ${digest} to ${this.where}`,
      };
      const res = await this.t.request(req);
      if (res.statusCode !== 202) {
        await this.cancelUpload(location, scopes);
        return this.t.fail(res, req);
      }
      location = this.location(res, req);
      await res.body.dump();
      offset += chunk.length;
    };

    try {
      for await (const chunk of chunksOf(body, chunkSize)) {
        if (offset + chunk.length > size) {
          throw new NydusError('ERR_INVALID_ARG', `Blob ${digest} has more than the ${size} bytes announced`);
        }
        await patch(chunk);
      }
      if (offset !== size) {
        throw new NydusError(
          'ERR_INVALID_ARG',
          `Blob ${digest} has ${offset} bytes, not the ${size} announced`,
        );
      }
      const got = `${digest.slice(0, digest.indexOf(':'))}:${hash.digest('hex')}`;
      if (got !== digest) {
        throw new NydusError('ERR_DIGEST', `Blob to push as ${digest} to ${this.where} has digest ${got}`);
      }
    } catch (e) {
      await this.cancelUpload(location, scopes);
      throw e;
    }

    const done = new URL(location);
    done.searchParams.set('digest', digest);
    const put: HttpRequest = {
      method: 'PUT',
      url: done,
      headers: { 'content-length': '0' },
      scopes,
      what: `Commit upload of blob ${digest} to ${this.where}`,
    };
    const res = await this.t.request(put);
    if (res.statusCode !== 201 && res.statusCode !== 204) return this.t.fail(res, put);
    await res.body.dump();
    return 'uploaded';
  }

  private async cancelUpload(location: URL, scopes: readonly string[]): Promise<void> {
    try {
      const res = await this.t.request({
        method: 'DELETE',
        url: location,
        scopes,
        what: `Cancel upload to ${this.where}`,
      });
      await res.body.dump();
    } catch (e) {
      this.t.log.debug(`Cancelling an upload to ${this.where} failed: ${errorText(e)}`);
    }
  }
}

/** Drop a response body that will not be read (its connection is closed, not reused). */
function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** The upload body as chunks of `size` bytes (the last one shorter). */
async function* chunksOf(body: PushBody, size: number): AsyncGenerator<Buffer> {
  if (Buffer.isBuffer(body)) {
    for (let off = 0; off < body.length; off += size) yield body.subarray(off, off + size);
    return;
  }
  const stream: Readable =
    typeof body === 'string'
      ? createReadStream(body, { highWaterMark: Math.min(size, 1024 * 1024) })
      : body();
  let parts: Buffer[] = [];
  let have = 0;
  try {
    for await (const c of stream as AsyncIterable<Buffer | string>) {
      let chunk = typeof c === 'string' ? Buffer.from(c) : c;
      while (chunk.length > 0) {
        const take = Math.min(chunk.length, size - have);
        parts.push(chunk.subarray(0, take));
        have += take;
        chunk = chunk.subarray(take);
        if (have === size) {
          yield Buffer.concat(parts, have);
          parts = [];
          have = 0;
        }
      }
    }
  } finally {
    stream.destroy();
  }
  if (have > 0) yield Buffer.concat(parts, have);
}

/** Passes bytes through; fails at the end when the digest or the announced size is wrong. */
class VerifyDigest extends Transform {
  private readonly hash: Hash;
  private count = 0;

  constructor(
    private readonly digest: string,
    private readonly size: number | undefined,
    private readonly what: string,
  ) {
    super();
    this.hash = newHash(digest);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.count += chunk.length;
    if (this.size !== undefined && this.count > this.size) {
      cb(new NydusError('ERR_REGISTRY', `${this.what}: more than the ${this.size} bytes announced`));
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.size !== undefined && this.count !== this.size) {
      cb(
        new NydusError(
          'ERR_NETWORK',
          `${this.what}: the response ended after ${this.count} of ${this.size} bytes`,
        ),
      );
      return;
    }
    const got = `${this.digest.slice(0, this.digest.indexOf(':'))}:${this.hash.digest('hex')}`;
    if (got !== this.digest) {
      cb(new NydusError('ERR_DIGEST', `${this.what}: the ${this.count} bytes received have digest ${got}`));
      return;
    }
    cb();
  }
}
