import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SEED_003_TEMPLATE } from '../../src/snapshotter/nydusd-config.js';
import { mountPointsUnder } from '../../src/util/mounts.js';
import { processTempDir } from './oci-images.js';
import { binPath, runBin } from './run-bin.js';

/**
 * The real `containerd-nydus-grpc` in tests: started as a process on a private root and socket,
 * waited for until its socket answers, stopped (or killed, or restarted) on demand. stop()
 * leaves no nydusd, mount or directory behind when asked to clean.
 */

const WAIT_MS = 20_000;

export interface SnapshotterProc {
  /** The temp dir holding root, socket and config files. */
  base: string;
  root: string;
  sock: string;
  /** The nydusd config template given with --nydusd-config. */
  templatePath: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  output(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<number | null>;
  /** SIGKILL (a crash). */
  kill(): Promise<void>;
}

export interface StartSnapshotterOptions {
  /** Reuse a root (a restart); default a new temp dir. */
  root?: string;
  daemonMode?: 'dedicated' | 'shared';
  /** Extra CLI arguments. */
  args?: string[];
  /** TOML config text (written to <root>/../config.toml and given with --config). */
  toml?: string;
  /** The nydusd config template (default: seed 003's). */
  template?: object;
  env?: NodeJS.ProcessEnv;
}

/** Seed 003's nydusd config: the default template of these tests. */
export { SEED_003_TEMPLATE };

async function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export function snapshotterRoot(): string {
  // Short: the snapshotter limits root to 70 bytes (unix socket paths under it).
  return mkdtempSync('/tmp/nsn-');
}

export async function startSnapshotter(o: StartSnapshotterOptions = {}): Promise<SnapshotterProc> {
  const base = o.root ?? snapshotterRoot();
  const root = join(base, 'r');
  const sock = join(base, 'grpc.sock');
  mkdirSync(root, { recursive: true });
  const templatePath = join(base, 'nydusd-config.json');
  if (!existsSync(templatePath) || o.template !== undefined) {
    writeFileSync(templatePath, JSON.stringify(o.template ?? SEED_003_TEMPLATE, null, 2));
  }
  const args = [
    binPath('containerd-nydus-grpc'),
    '--root',
    root,
    '--address',
    sock,
    '--nydusd',
    binPath('nydusd'),
    '--nydusd-config',
    templatePath,
    '--log-to-stdout',
    '--log-level',
    'debug',
    ...(o.daemonMode !== undefined ? ['--daemon-mode', o.daemonMode] : []),
  ];
  if (o.toml !== undefined) {
    const p = join(base, 'config.toml');
    writeFileSync(p, o.toml);
    args.push('--config', p);
  }
  args.push(...(o.args ?? []));
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: o.env ?? process.env,
  });
  let out = '';
  const add = (d: string): void => {
    out = (out + d).slice(-200_000);
  };
  child.stdout?.setEncoding('utf8').on('data', add);
  child.stderr?.setEncoding('utf8').on('data', add);
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (c) => {
      code = c;
      resolve(c);
    }),
  );
  const p: SnapshotterProc = {
    base,
    root,
    sock,
    templatePath,
    child,
    exited,
    output: () => out,
    stop: async () => {
      if (code === undefined) child.kill('SIGTERM');
      const r = await Promise.race([exited, sleep(WAIT_MS).then(() => 'hung' as const)]);
      if (r === 'hung') {
        child.kill('SIGKILL');
        throw new Error(`containerd-nydus-grpc did not stop within ${WAIT_MS} ms:\n${out.slice(-4000)}`);
      }
      return r;
    },
    kill: async () => {
      if (code === undefined) child.kill('SIGKILL');
      await exited;
    },
  };
  const deadline = Date.now() + WAIT_MS;
  while (!(existsSync(sock) && (await socketAnswers(sock)))) {
    if (code !== undefined)
      throw new Error(`containerd-nydus-grpc exited with ${String(code)}:\n${out.slice(-4000)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`containerd-nydus-grpc did not listen within ${WAIT_MS} ms:\n${out.slice(-4000)}`);
    }
    await sleep(50);
  }
  return p;
}

/** pids of nydusd processes (not the snapshotter) whose command line mentions `root`. */
export function nydusdPids(root: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    // The program, or node and its script (after node's own flags: the nydusd entry restarts
    // itself with some).
    const script = argv.slice(1).find((a) => !a.startsWith('-')) ?? '';
    const prog = [argv[0] ?? '', script].map((a) => a.slice(a.lastIndexOf('/') + 1));
    if (!prog.includes('nydusd') && !prog.includes('nydusd.cjs')) continue;
    if (!argv.some((a) => a.includes(root))) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
    } catch {
      continue;
    }
    out.push(Number(name));
  }
  return out;
}

/** Mount points under `dir` (from /proc/self/mountinfo). */
export const mountsUnder = mountPointsUnder;

/** Kill every nydusd of `root`, lazily unmount everything under `base`, remove it. */
export async function scrubSnapshotter(base: string): Promise<void> {
  for (const pid of nydusdPids(base)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await sleep(100);
  for (const m of mountsUnder(base).sort((a, b) => b.length - a.length)) {
    spawnSync('umount', ['-l', m]);
  }
  rmSync(base, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// A Nydus image with a corrupt bootstrap (for the bad-input tests)

async function uploadBlob(regUrl: string, repo: string, data: Buffer): Promise<string> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const start = await fetch(`${regUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location') ?? '', regUrl);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  if (put.status !== 201) throw new Error(`upload: HTTP ${put.status} ${await put.text()}`);
  return digest;
}

interface OciManifest {
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number; annotations?: Record<string, string> }>;
}

interface OciConfig {
  rootfs: { diff_ids: string[] };
  history?: Array<{ empty_layer?: boolean }>;
}

/**
 * Tag `repo:newTag` as a changed copy of the OCI image `repo:tag`: `edit` changes the manifest
 * and config in place (uploading any new layer itself); the config is uploaded and the manifest
 * pushed under the new tag.
 */
async function rewriteImage(
  regUrl: string,
  repo: string,
  tag: string,
  newTag: string,
  edit: (manifest: OciManifest, config: OciConfig) => Promise<void>,
): Promise<void> {
  const accept = 'application/vnd.oci.image.manifest.v1+json';
  const manifest = (await (
    await fetch(`${regUrl}/v2/${repo}/manifests/${tag}`, { headers: { accept } })
  ).json()) as OciManifest;
  const config = (await (
    await fetch(`${regUrl}/v2/${repo}/blobs/${manifest.config.digest}`)
  ).json()) as OciConfig;
  await edit(manifest, config);
  const bytes = Buffer.from(JSON.stringify(config));
  manifest.config = { ...manifest.config, digest: await uploadBlob(regUrl, repo, bytes), size: bytes.length };
  const put = await fetch(`${regUrl}/v2/${repo}/manifests/${newTag}`, {
    method: 'PUT',
    headers: { 'content-type': accept },
    body: JSON.stringify(manifest),
  });
  if (put.status !== 201) throw new Error(`manifest put: HTTP ${put.status} ${await put.text()}`);
}

/**
 * Copy the Nydus image `repo:tag` of a registry to `repo:newTag` with the bytes of its
 * bootstrap (image/image.boot in the bootstrap layer) overwritten at the start, the layer,
 * config diff_id and manifest updated so that containerd unpacks it without complaint.
 */
export function pushCorruptBootstrap(
  regUrl: string,
  repo: string,
  tag: string,
  newTag: string,
): Promise<void> {
  return rewriteImage(regUrl, repo, tag, newTag, async (manifest, config) => {
    const idx = manifest.layers.findIndex(
      (l) => l.annotations?.['containerd.io/snapshot/nydus-bootstrap'] !== undefined,
    );
    if (idx < 0) throw new Error('no bootstrap layer');
    const layer = manifest.layers[idx]!;
    const gz = Buffer.from(await (await fetch(`${regUrl}/v2/${repo}/blobs/${layer.digest}`)).arrayBuffer());
    const tar = gunzipSync(gz);
    let off = 0;
    let done = false;
    while (off + 512 <= tar.length && !done) {
      const name = tar
        .subarray(off, off + 100)
        .toString('latin1')
        .replace(/\0.*$/s, '');
      const size = parseInt(
        tar
          .subarray(off + 124, off + 136)
          .toString('latin1')
          .replace(/\0.*$/s, '')
          .trim() || '0',
        8,
      );
      if (name === '') break;
      if (name.endsWith('image.boot')) {
        tar.fill(0xab, off + 512, off + 512 + Math.min(size, 4096));
        done = true;
      }
      off += 512 + Math.ceil(size / 512) * 512;
    }
    if (!done) throw new Error('no image.boot in the bootstrap layer');
    const newGz = gzipSync(tar);
    config.rootfs.diff_ids[idx] = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
    manifest.layers[idx] = { ...layer, digest: await uploadBlob(regUrl, repo, newGz), size: newGz.length };
  });
}

/**
 * Tag `repo:newTag` as the OCI image `repo:tag` without its top layer (manifest, config
 * diff_ids and history cut): an image that shares every other layer with the original.
 */
export function pushWithoutTopLayer(
  regUrl: string,
  repo: string,
  tag: string,
  newTag: string,
): Promise<void> {
  return rewriteImage(regUrl, repo, tag, newTag, (manifest, config) => {
    manifest.layers = manifest.layers.slice(0, -1);
    config.rootfs.diff_ids = config.rootfs.diff_ids.slice(0, -1);
    if (config.history !== undefined) {
      let last = config.history.length - 1;
      while (last >= 0 && config.history[last]!.empty_layer === true) last--;
      config.history = config.history.slice(0, Math.max(0, last));
    }
    return Promise.resolve();
  });
}

/** `nydusify convert` of `source` into `target` (plain HTTP registries); fails the test on error. */
export async function convertToNydus(source: string, target: string): Promise<void> {
  const r = await runBin(
    'nydusify',
    [
      'convert',
      '--source',
      source,
      '--target',
      target,
      '--plain-http',
      '--work-dir',
      processTempDir('sn-convert'),
    ],
    { timeoutMs: 180_000 },
  );
  if (r.code !== 0) throw new Error(`nydusify convert ${source} -> ${target} failed:\n${r.stderr}`);
}

/** `skopeo copy` between plain-HTTP registries, pushing with `destCreds` ("user:pass"). */
export function copyImage(source: string, target: string, destCreds: string): void {
  const r = spawnSync(
    'skopeo',
    [
      '--insecure-policy',
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--dest-creds',
      destCreds,
      `docker://${source}`,
      `docker://${target}`,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (r.status !== 0) throw new Error(`skopeo copy ${source} -> ${target} failed: ${r.stderr}`);
}
