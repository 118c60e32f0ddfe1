import { createInterface } from 'node:readline';
import { Command } from 'commander';
import { errorText, NydusError } from '../../errors/errors.js';
import { isDir, isReg, isSymlink } from '../../format/flags.js';
import type { ChunkInfo, InodeAttr } from '../../format/model.js';
import type { RafsImage } from '../../rafs/image.js';
import { loggerFrom } from '../common.js';
import { bootstrapArg, openImage } from './source.js';
import { formatBlobFeatures } from './check.js';

/**
 * `nydus-image inspect`: an interactive prompt over a bootstrap, or one request (`-R`) whose
 * result is printed as JSON. Interactive output follows upstream's text layout.
 */
export class Inspector {
  readonly #img: RafsImage;
  readonly #json: boolean;
  #cwd: number;
  readonly #parents: number[] = [];
  #paths: Map<number, string[]> | undefined;

  constructor(img: RafsImage, json: boolean) {
    this.#img = img;
    this.#json = json;
    this.#cwd = img.bootstrap.rootIno;
  }

  static readonly USAGE = `
    stats:              Display RAFS filesystem metadata
    ls:                 Show files in current directory
    cd DIR:             Change current directory
    stat FILE_NAME:     Show particular information of RAFS file
    blobs:              Show blob table
    prefetch:           Show prefetch table
    chunk OFFSET:       List basic info of a single chunk together with a list of files that share it
    icheck INODE:       Show path of the inode and basic information
    exit:               Exit
`;

  /** Paths of every inode (all hardlink occurrences), built once on demand. */
  #pathsOf(ino: number): string[] {
    if (this.#paths === undefined) {
      const m = new Map<number, string[]>();
      for (const e of this.#img.walk()) {
        const l = m.get(e.ino) ?? [];
        l.push(e.path.toString());
        m.set(e.ino, l);
      }
      this.#paths = m;
    }
    return this.#paths.get(ino) ?? [];
  }

  #attrJson(a: InodeAttr, name: string, parent: number): Record<string, unknown> {
    return {
      inode: a.ino,
      name,
      size: a.size,
      parent,
      mode: a.mode,
      permissions: (a.mode & 0o7777).toString(8),
      nlink: a.nlink,
      uid: a.uid,
      gid: a.gid,
      mtime: a.mtime,
      mtime_nsec: a.mtimeNsec,
      blocks: a.blocks,
      rdev: a.rdev,
    };
  }

  #attrText(a: InodeAttr, name: string, parent: number): string {
    return `
Inode Number:       ${a.ino}
Name:               ${JSON.stringify(name)}
Size:               ${a.size}
Parent:             ${parent}
Mode:               0x${a.mode.toString(16).toUpperCase()}
Permissions:        ${(a.mode & 0o7777).toString(8)}
Nlink:              ${a.nlink}
UID:                ${a.uid}
GID:                ${a.gid}
Mtime:              ${a.mtime}
MtimeNsec:          ${a.mtimeNsec}
Blocks:             ${a.blocks}
`;
  }

  #chunkJson(c: ChunkInfo, i: number): Record<string, unknown> {
    const blob = this.#img.bootstrap.blobs[c.blobIndex];
    return {
      index: i,
      file_offset: c.fileOffset,
      chunk_index: c.index,
      compressed_size: c.compressedSize,
      decompressed_size: c.uncompressedSize,
      compressed_offset: c.compressedOffset,
      decompressed_offset: c.uncompressedOffset,
      blob_id: blob?.blobId ?? null,
      chunk_id: c.id.toString('hex'),
    };
  }

  /** Execute one command line; returns the JSON value (request mode) or text (interactive). */
  async execute(line: string): Promise<{ exit?: boolean; value?: unknown; text?: string }> {
    const [cmd, arg, extra] = line.trim().split(/\s+/);
    const b = this.#img.bootstrap;
    const sb = b.superblock;
    if (cmd === undefined || cmd === '') return {};
    if (extra !== undefined)
      throw new NydusError('ERR_INVALID_ARG', `Invalid arguments in inspect request "${line.trim()}"`);
    const needArg = (what: string): string => {
      if (arg === undefined)
        throw new NydusError(
          'ERR_INVALID_ARG',
          `Invalid arguments in inspect request "${line.trim()}": ${cmd} needs ${what}`,
        );
      return arg;
    };
    const noArg = (): void => {
      if (arg !== undefined)
        throw new NydusError(
          'ERR_INVALID_ARG',
          `Invalid arguments in inspect request "${line.trim()}": ${cmd} takes no argument`,
        );
    };
    switch (cmd) {
      case 'exit':
      case 'q':
        return { exit: true };
      case 'help':
        if (this.#json)
          throw new NydusError('ERR_INVALID_ARG', 'help is not supported in inspect request mode');
        return { text: Inspector.USAGE };
      case 'stats': {
        noArg();
        const f = sb.fields;
        const value = {
          inodes_count: sb.inodesCount,
          version: sb.version,
          chunk_size: sb.chunkSize,
          flags: sb.flags,
          root_inode: b.rootIno,
          ...f,
        };
        const text = `
    Version:                ${sb.version}
    Inodes Count:           ${sb.inodesCount}
    Chunk Size:             ${sb.chunkSize / 1024}KB
    Root Inode:             ${b.rootIno}
    Flags:                  ${sb.flags}
    Blob table offset:      0x${Number(f['blob_table_offset'] ?? 0).toString(16)}
    Blob table size:        0x${Number(f['blob_table_size'] ?? 0).toString(16)}
    Prefetch table offset:  0x${Number(f['prefetch_table_offset'] ?? 0).toString(16)}
    Prefetch table entries: 0x${Number(f['prefetch_table_entries'] ?? Number(f['prefetch_table_size'] ?? 0) / 4).toString(16)}
    Chunk table offset:     0x${Number(f['chunk_table_offset'] ?? 0).toString(16)}
    Chunk table size:       0x${Number(f['chunk_table_size'] ?? 0).toString(16)}
`;
        return { value, text };
      }
      case 'ls': {
        noArg();
        const value: unknown[] = [];
        let text = '';
        const n = b.childCount(this.#cwd);
        for (let pos = 0; pos < n;) {
          const batch = b.readdir(this.#cwd, pos, 1024);
          if (batch.length === 0) break;
          pos += batch.length;
          for (const e of batch) {
            const sign = isReg(e.type) ? '-' : isDir(e.type) ? 'd' : isSymlink(e.type) ? 'l' : ' ';
            value.push({ type: sign, inode: e.ino, name: e.name.toString() });
            text += `${sign}    ${String(e.ino).padEnd(8)} ${JSON.stringify(e.name.toString())}\n`;
          }
        }
        return { value, text };
      }
      case 'cd': {
        const dir = needArg('DIR');
        if (dir === '.') return { value: null };
        if (dir === '..') {
          const p = this.#parents.pop();
          if (p !== undefined) this.#cwd = p;
          return { value: null };
        }
        const e = b.lookup(this.#cwd, Buffer.from(dir));
        if (e === undefined) throw new NydusError('ERR_NOT_FOUND', `${dir} is not found`);
        if (!isDir(e.type)) throw new NydusError('ERR_INODE_TYPE', `${dir} is not a directory`);
        this.#parents.push(this.#cwd);
        this.#cwd = e.ino;
        return { value: null };
      }
      case 'stat': {
        const name = needArg('FILE_NAME');
        const parent = this.#parents[this.#parents.length - 1] ?? b.rootIno;
        const e =
          name === '.'
            ? { ino: this.#cwd, name: Buffer.from('.'), type: 0o040000 }
            : b.lookup(this.#cwd, Buffer.from(name));
        if (e === undefined) throw new NydusError('ERR_NOT_FOUND', `${name} is not found`);
        const a = b.getAttr(e.ino);
        const parentIno = name === '.' ? parent : this.#cwd;
        const value: Record<string, unknown> = this.#attrJson(a, name, parentIno);
        let text = this.#attrText(a, name, parentIno);
        if (isReg(a.mode)) {
          const chunks = await this.#img.chunks(e.ino);
          value['chunks'] = chunks.map((c, i) => this.#chunkJson(c, i));
          text += '  Chunk list:\n';
          chunks.forEach((c, i) => {
            const j = this.#chunkJson(c, i);
            text += `        ${i} ->
        file offset: ${String(j['file_offset'])}, chunk index: ${c.index}
        compressed size: ${c.compressedSize}, decompressed size: ${c.uncompressedSize}
        compressed offset: ${c.compressedOffset}, decompressed offset: ${c.uncompressedOffset}
        blob id: ${String(j['blob_id'])}
        chunk id: ${c.id.toString('hex')}
`;
          });
        }
        return { value, text };
      }
      case 'blobs': {
        noArg();
        const value = b.blobs.map((x) => ({
          blob_id: x.blobId,
          readahead_offset: x.readaheadOffset,
          readahead_size: x.readaheadSize,
          decompressed_size: x.uncompressedSize,
          compressed_size: x.compressedSize,
        }));
        const text = b.blobs
          .map(
            (x) => `
Blob Index:             ${x.index}
Blob ID:                ${x.blobId}
Blob Size:              ${x.compressedSize}
Uncompressed Data Size: ${x.uncompressedSize}
Mapped Block Address:   ${x.mappedBlkaddr}
Features:               ${formatBlobFeatures(x.features)}
Compressor:             ${x.compressor}
Digester:               ${x.digester}
Chunk Size:             0x${x.chunkSize.toString(16)}
Chunk Count:            ${x.chunkCount}
Prefetch Table Offset:  ${x.readaheadOffset}
Prefetch Table Size:    ${x.readaheadSize}
Meta Compressor:        ${x.ciCompressor}
Meta Offset:            ${x.ciOffset}
Meta Compressed Size:   ${x.ciCompressedSize}
Meta Uncompressed Size: ${x.ciUncompressedSize}
ToC Digest:             ${x.tocDigest.toString('hex')}
ToC Size:               ${x.tocSize}
RAFS Blob Digest:       ${x.metaDigest.toString('hex')}
RAFS Blob Size:         ${x.metaSize}
`,
          )
          .join('');
        return { value, text };
      }
      case 'prefetch': {
        noArg();
        const inos = b.prefetchInos();
        const value = inos.map((ino) => ({ inode: ino, path: this.#pathsOf(ino) }));
        const text =
          `Total Prefetching Files: ${inos.length}\n` +
          inos
            .map(
              (ino) =>
                `Inode Number:${String(ino).padStart(10)} | Path: ${JSON.stringify(this.#pathsOf(ino).join(' '))} \n`,
            )
            .join('');
        return { value, text };
      }
      case 'chunk': {
        const s = needArg('OFFSET');
        if (!/^\d+$/.test(s))
          throw new NydusError('ERR_INVALID_ARG', `Wrong OFFSET "${s}" is specified: not a valid u64 value`);
        const offset = Number(s);
        const value: unknown[] = [];
        let text = '';
        for (const e of this.#img.walk()) {
          if (!isReg(e.attr.mode)) continue;
          for (const c of await this.#img.chunks(e.ino)) {
            if (c.compressedOffset !== offset) continue;
            const blob = b.blobs[c.blobIndex];
            value.push({ file: e.path.toString(), ...this.#chunkJson(c, c.fileOffset / sb.chunkSize) });
            text += `
File: ${e.name.toString().padEnd(32)} Parent Path: ${e.path.subarray(0, e.path.length - e.name.length - 1).toString() || '/'}
Compressed Offset: ${c.compressedOffset}, Compressed Size: ${c.compressedSize}
Decompressed Offset: ${c.uncompressedOffset}, Decompressed Size: ${c.uncompressedSize}
Chunk ID: ${c.id.toString('hex')},
Blob ID: ${blob?.blobId ?? '?'}
`;
          }
        }
        return { value, text };
      }
      case 'icheck': {
        const s = needArg('INODE');
        if (!/^\d+$/.test(s))
          throw new NydusError('ERR_INVALID_ARG', `Wrong INODE "${s}" is specified: not an inode number`);
        const ino = Number(s);
        const a = b.getAttr(ino);
        const paths = this.#pathsOf(ino);
        const value = { paths, ...this.#attrJson(a, paths[0]?.split('/').pop() ?? '', 0) };
        const text = paths.map((p) => `${p}\n${this.#attrText(a, p.split('/').pop() ?? '', 0)}`).join('');
        return { value, text };
      }
      default:
        throw new NydusError('ERR_INVALID_ARG', `Unsupported inspect request "${cmd}"`);
    }
  }
}

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('Inspect RAFS filesystem metadata in interactive or request mode')
    .argument('[BOOTSTRAP]', 'File path of RAFS metadata (or a data blob with inline metadata)')
    .option('-B, --bootstrap <file>', '[Deprecated] File path of RAFS meta blob/bootstrap')
    .option(
      '-D, --blob-dir <dir>',
      'Directory for localfs storage backend, hosting data blobs and cache files',
    )
    .option('-C, --config <file>', 'Configuration file for storage backend, cache and RAFS FUSE filesystem')
    .option(
      '-R, --request <cmd>',
      'Inspect RAFS filesystem metadata in request mode: stats, ls, cd DIR, stat FILE, blobs, prefetch, chunk OFFSET, icheck INODE',
    )
    .action(
      async (positional: string | undefined, opts: Record<string, string | undefined>, cmd: Command) => {
        const path = bootstrapArg(positional, opts['bootstrap']);
        const args: { blobDir?: string; config?: string } = {};
        if (opts['blobDir'] !== undefined) args.blobDir = opts['blobDir'];
        if (opts['config'] !== undefined) args.config = opts['config'];
        const o = await openImage(path, args, loggerFrom(cmd));
        try {
          const request = opts['request'];
          if (request !== undefined) {
            const r = await new Inspector(o.image, true).execute(request);
            process.stdout.write(`${JSON.stringify(r.value ?? null)}\n`);
            return;
          }
          await interactive(new Inspector(o.image, false));
        } finally {
          await o.image.close();
        }
      },
    );
}

async function interactive(insp: Inspector): Promise<void> {
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  rl.setPrompt('Inspecting RAFS :> ');
  rl.prompt();
  for await (const line of rl) {
    try {
      const r = await insp.execute(line);
      if (r.exit === true) break;
      if (r.text !== undefined) process.stdout.write(r.text);
    } catch (e) {
      process.stdout.write(`Failed to execute command, ${errorText(e)}\n`);
      if (e instanceof NydusError && e.code === 'ERR_INVALID_ARG' && /Unsupported/.test(e.message))
        process.stdout.write(Inspector.USAGE);
    }
    rl.prompt();
  }
  rl.close();
}
