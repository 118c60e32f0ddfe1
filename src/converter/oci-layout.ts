import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { errorText, FormatError, NydusError } from '../errors/errors.js';
import type { Descriptor, ImageIndex } from '../oci/manifest.js';
import { ANNOTATION_REF_NAME, OCI_INDEX } from '../oci/media-types.js';
import { checkDigest, isDigest } from '../oci/reference.js';
import { TarType } from '../tar/header.js';
import { relativeEntryName, TarReader } from '../tar/reader.js';
import { TarWriter } from '../tar/writer.js';
import type { PushBody, ImageRepo } from './repo.js';

/** containerd's image-name annotation in exported archives. */
export const ANNOTATION_CONTAINERD_IMAGE_NAME = 'io.containerd.image.name';

const LAYOUT_FILE = JSON.stringify({ imageLayoutVersion: '1.0.0' });

function blobFile(dir: string, digest: string): string {
  const [algo, hex] = checkDigest(digest, 'blob digest').split(':') as [string, string];
  return join(dir, 'blobs', algo, hex);
}

async function exists(p: string): Promise<number | undefined> {
  try {
    const st = await stat(p);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

function digestOfHash(digest: string): ReturnType<typeof createHash> {
  const algo = digest.slice(0, digest.indexOf(':'));
  if (algo !== 'sha256' && algo !== 'sha512')
    throw new NydusError('ERR_UNSUPPORTED', `Unsupported digest algorithm in "${digest}"`);
  return createHash(algo);
}

/**
 * An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) with the
 * same read/push surface as a registry repository, so copy and convert treat both alike. Tags
 * are the `org.opencontainers.image.ref.name` annotations of index.json entries.
 */
export class OciLayoutRepo implements ImageRepo {
  readonly dir: string;
  readonly display: string;

  constructor(dir: string, display = `oci:${dir}`) {
    this.dir = dir;
    this.display = display;
  }

  /** Create the directory skeleton when it is not a layout yet. */
  async init(): Promise<this> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    if ((await exists(join(this.dir, 'oci-layout'))) === undefined)
      await writeFile(join(this.dir, 'oci-layout'), LAYOUT_FILE);
    if ((await exists(join(this.dir, 'index.json'))) === undefined)
      await writeFile(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [] }));
    return this;
  }

  async readIndex(): Promise<ImageIndex> {
    let text: string;
    try {
      text = await readFile(join(this.dir, 'index.json'), 'utf8');
    } catch (e) {
      throw new NydusError('ERR_NOT_FOUND', `${this.display} is not an OCI image layout: ${errorText(e)}`, {
        cause: e,
      });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new FormatError(`${this.display}: index.json is not valid JSON`, undefined, { cause: e });
    }
    const idx = doc as ImageIndex;
    if (typeof doc !== 'object' || doc === null || !Array.isArray(idx.manifests))
      throw new FormatError(`${this.display}: index.json has no "manifests" array`);
    return idx;
  }

  async #writeIndex(idx: ImageIndex): Promise<void> {
    const tmp = join(this.dir, `.index.json.${process.pid}.tmp`);
    await writeFile(tmp, JSON.stringify({ ...idx, schemaVersion: 2, mediaType: idx.mediaType ?? OCI_INDEX }));
    await rename(tmp, join(this.dir, 'index.json'));
  }

  /** The index.json entry a tag or digest names (the only entry when `ref` is undefined). */
  async lookup(ref: string | undefined): Promise<Descriptor> {
    const idx = await this.readIndex();
    let found: Descriptor | undefined;
    if (ref === undefined) {
      if (idx.manifests.length !== 1)
        throw new NydusError(
          'ERR_INVALID_ARG',
          `${this.display} holds ${idx.manifests.length} images: name one with a tag`,
        );
      found = idx.manifests[0];
    } else if (isDigest(ref)) {
      found = idx.manifests.find((d) => d.digest === ref);
      if (found === undefined) {
        const size = await exists(blobFile(this.dir, ref));
        if (size !== undefined) {
          const bytes = await readFile(blobFile(this.dir, ref));
          const mt = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType;
          found = { mediaType: mt ?? 'application/vnd.oci.image.manifest.v1+json', digest: ref, size };
        }
      }
    } else {
      found = idx.manifests.find(
        (d) =>
          d.annotations?.[ANNOTATION_REF_NAME] === ref ||
          d.annotations?.[ANNOTATION_CONTAINERD_IMAGE_NAME]?.endsWith(`:${ref}`) === true,
      );
    }
    if (found === undefined) throw new NydusError('ERR_NOT_FOUND', `${this.display} has no image "${ref}"`);
    return found;
  }

  async getManifest(tagOrDigest: string): Promise<{ digest: string; mediaType: string; bytes: Buffer }> {
    const d = await this.lookup(tagOrDigest);
    const bytes = await this.fetchBlob(d.digest);
    return { digest: d.digest, mediaType: d.mediaType, bytes };
  }

  async headManifest(
    tagOrDigest: string,
  ): Promise<{ digest: string; mediaType: string; size: number } | undefined> {
    try {
      const d = await this.lookup(tagOrDigest);
      return { digest: d.digest, mediaType: d.mediaType, size: d.size };
    } catch (e) {
      if (e instanceof NydusError && e.code === 'ERR_NOT_FOUND') return undefined;
      throw e;
    }
  }

  async putManifest(tagOrDigest: string, mediaType: string, bytes: Buffer): Promise<string> {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    await this.pushBlob(digest, bytes.length, bytes);
    if (!isDigest(tagOrDigest)) await this.tag(tagOrDigest, { mediaType, digest, size: bytes.length });
    return digest;
  }

  /** Point a tag at a descriptor in index.json (replacing the tag's old entry). */
  async tag(tag: string, desc: Descriptor, extra: Record<string, string> = {}): Promise<void> {
    const idx = await this.readIndex();
    const manifests = idx.manifests.filter((d) => d.annotations?.[ANNOTATION_REF_NAME] !== tag);
    manifests.push({ ...desc, annotations: { ...desc.annotations, ...extra, [ANNOTATION_REF_NAME]: tag } });
    await this.#writeIndex({ ...idx, manifests });
  }

  async headBlob(digest: string): Promise<number | undefined> {
    return exists(blobFile(this.dir, digest));
  }

  async openBlob(digest: string): Promise<Readable> {
    const p = blobFile(this.dir, digest);
    if ((await exists(p)) === undefined)
      throw new NydusError('ERR_NOT_FOUND', `${this.display} has no blob ${digest}`);
    return createReadStream(p, { highWaterMark: 1 << 20 });
  }

  async fetchBlob(digest: string): Promise<Buffer> {
    const p = blobFile(this.dir, digest);
    let bytes: Buffer;
    try {
      bytes = await readFile(p);
    } catch (e) {
      throw new NydusError('ERR_NOT_FOUND', `${this.display} has no blob ${digest}`, { cause: e });
    }
    const got = `${digest.slice(0, digest.indexOf(':'))}:${digestOfHash(digest).update(bytes).digest('hex')}`;
    if (got !== digest)
      throw new NydusError('ERR_DIGEST', `${this.display}: blob ${digest} has digest ${got}`);
    return bytes;
  }

  async readBlobRange(digest: string, offset: number, length: number): Promise<Buffer> {
    const fh = await open(blobFile(this.dir, digest), 'r');
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (bytesRead !== length)
        throw new NydusError(
          'ERR_IO',
          `${this.display}: blob ${digest} is shorter than ${offset + length} bytes`,
        );
      return buf;
    } finally {
      await fh.close();
    }
  }

  async pushBlob(digest: string, size: number, body: PushBody): Promise<'exists' | 'mounted' | 'uploaded'> {
    const dest = blobFile(this.dir, digest);
    if ((await exists(dest)) === size) return 'exists';
    await mkdir(dirname(dest), { recursive: true });
    const tmp = `${dest}.${process.pid}.tmp`;
    const hash = digestOfHash(digest);
    let n = 0;
    const src: Readable =
      typeof body === 'function'
        ? body()
        : Buffer.isBuffer(body)
          ? Readable.from([body])
          : createReadStream(body, { highWaterMark: 1 << 20 });
    try {
      await pipeline(
        src,
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const c of chunks) {
            hash.update(c);
            n += c.length;
            yield c;
          }
        },
        createWriteStream(tmp),
      );
      const got = `${digest.slice(0, digest.indexOf(':'))}:${hash.digest('hex')}`;
      if (n !== size) throw new NydusError('ERR_INVALID_ARG', `Blob ${digest} has ${n} bytes, not ${size}`);
      if (got !== digest) throw new NydusError('ERR_DIGEST', `Blob to store as ${digest} has digest ${got}`);
      await rename(tmp, dest);
    } finally {
      await rm(tmp, { force: true });
    }
    return 'uploaded';
  }
}

/**
 * Write a layout directory as an OCI image layout tar archive (`oci-layout`, `index.json`,
 * `blobs/...`), the form `file://` targets take.
 */
export async function packLayoutArchive(dir: string, file: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const out = createWriteStream(tmp);
  const done = new Promise<void>((res, rej) => {
    out.on('finish', res);
    out.on('error', rej);
  });
  const tar = new TarWriter(out);
  const base = { uid: 0, gid: 0, mtime: 0, mtimeNsec: 0 };
  try {
    for (const name of ['oci-layout', 'index.json']) {
      const data = await readFile(join(dir, name));
      await tar.add(
        { ...base, path: Buffer.from(name), type: TarType.FILE, mode: 0o644, size: data.length },
        [data],
      );
    }
    await tar.add({ ...base, path: Buffer.from('blobs'), type: TarType.DIR, mode: 0o755, size: 0 });
    for (const algo of (await readdir(join(dir, 'blobs'))).sort()) {
      await tar.add({ ...base, path: Buffer.from(`blobs/${algo}`), type: TarType.DIR, mode: 0o755, size: 0 });
      for (const hex of (await readdir(join(dir, 'blobs', algo))).sort()) {
        if (hex.endsWith('.tmp')) continue;
        const p = join(dir, 'blobs', algo, hex);
        const size = (await stat(p)).size;
        await tar.add(
          { ...base, path: Buffer.from(`blobs/${algo}/${hex}`), type: TarType.FILE, mode: 0o644, size },
          createReadStream(p, { highWaterMark: 1 << 20 }),
        );
      }
    }
    await tar.finish();
    out.end();
    await done;
    await rename(tmp, file);
  } catch (e) {
    out.destroy();
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Unpack an OCI image layout tar archive (plain or gzip'd, as containerd's import accepts) into
 * a directory. Only `oci-layout`, `index.json`, `manifest.json` and `blobs/<alg>/<hex>` are taken.
 */
export async function unpackLayoutArchive(file: string, dir: string): Promise<void> {
  await mkdir(join(dir, 'blobs'), { recursive: true });
  const fh = await open(file, 'r').catch((e: unknown) => {
    throw new NydusError('ERR_NOT_FOUND', `Cannot open image archive "${file}": ${errorText(e)}`, {
      cause: e,
    });
  });
  const head = Buffer.alloc(2);
  await fh.read(head, 0, 2, 0);
  await fh.close();
  const raw = createReadStream(file, { highWaterMark: 1 << 20 });
  const src: Readable = head[0] === 0x1f && head[1] === 0x8b ? raw.pipe(createGunzip()) : raw;
  raw.on('error', (e) => src.destroy(e));
  const reader = new TarReader(src);
  let sawIndex = false;
  for (let e = await reader.next(); e !== undefined; e = await reader.next()) {
    if (e.type !== TarType.FILE && e.type !== TarType.OLD_FILE) continue;
    const name = relativeEntryName(e.path);
    const ok =
      name === 'oci-layout' ||
      name === 'index.json' ||
      name === 'manifest.json' ||
      /^blobs\/[a-z0-9]+\/[0-9a-f]+$/.test(name);
    if (!ok) continue;
    if (name === 'index.json') sawIndex = true;
    const dest = join(dir, name);
    await mkdir(dirname(dest), { recursive: true });
    await pipeline(Readable.from(reader.data()), createWriteStream(dest));
  }
  if (!sawIndex) throw new FormatError(`Image archive "${file}" has no index.json: not an OCI image layout`);
}
