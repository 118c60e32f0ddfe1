import { FormatError, NydusError } from '../errors/errors.js';
import { isDigest } from './reference.js';
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  OCI_INDEX,
  OCI_MANIFEST,
  isIndexMediaType,
  isManifestMediaType,
} from './media-types.js';

/** OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
  artifactType?: string;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  config?: unknown;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: unknown[];
  [k: string]: unknown;
}

export type ParsedManifest =
  | { kind: 'manifest'; manifest: ImageManifest; mediaType: string }
  | { kind: 'index'; index: ImageIndex; mediaType: string };

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkStringMap(v: unknown, where: string): void {
  if (v === undefined) return;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw new FormatError(`${where} must be an object of strings`);
  }
}

function checkPlatform(v: unknown, where: string): void {
  if (!isObject(v) || typeof v['architecture'] !== 'string' || typeof v['os'] !== 'string') {
    throw new FormatError(`${where} must have string "architecture" and "os"`);
  }
  if (v['variant'] !== undefined && typeof v['variant'] !== 'string') {
    throw new FormatError(`${where}.variant must be a string`);
  }
  const f = v['os.features'];
  if (f !== undefined && !(Array.isArray(f) && f.every((x) => typeof x === 'string'))) {
    throw new FormatError(`${where}["os.features"] must be an array of strings`);
  }
}

/** Validate one descriptor (throws FormatError naming `where`). */
export function checkDescriptor(v: unknown, where: string): asserts v is Descriptor {
  if (!isObject(v)) throw new FormatError(`${where} is not an object`);
  if (typeof v['mediaType'] !== 'string' || v['mediaType'] === '') {
    throw new FormatError(`${where} has no "mediaType"`);
  }
  if (typeof v['digest'] !== 'string' || !isDigest(v['digest'])) {
    throw new FormatError(`${where} has an invalid digest ${JSON.stringify(v['digest'])}`);
  }
  const size = v['size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new FormatError(`${where} has an invalid size ${JSON.stringify(size)}`);
  }
  checkStringMap(v['annotations'], `${where}.annotations`);
  if (v['platform'] !== undefined) checkPlatform(v['platform'], `${where}.platform`);
  const urls = v['urls'];
  if (urls !== undefined && !(Array.isArray(urls) && urls.every((x) => typeof x === 'string'))) {
    throw new FormatError(`${where}.urls must be an array of strings`);
  }
}

/**
 * Parse a manifest or index. `mediaType` is the Content-Type the registry gave (or the
 * descriptor's); when it is missing or generic the document's own `mediaType` decides, and
 * without either the shape does (`manifests` means an index).
 */
export function parseManifestOrIndex(bytes: Buffer, mediaType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new FormatError(`Manifest is not valid JSON: ${(e as Error).message}`, undefined, { cause: e });
  }
  if (!isObject(doc)) throw new FormatError('Manifest is not a JSON object');
  if (doc['schemaVersion'] !== 2) {
    throw new FormatError(`Unsupported manifest schemaVersion ${JSON.stringify(doc['schemaVersion'])}`);
  }
  const declared = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : undefined;
  let type = mediaType?.split(';')[0]?.trim();
  if (type === undefined || !(isIndexMediaType(type) || isManifestMediaType(type))) {
    type = declared ?? (Array.isArray(doc['manifests']) ? OCI_INDEX : OCI_MANIFEST);
  }
  if (declared !== undefined && declared !== type) {
    throw new FormatError(`Manifest declares media type "${declared}" but was served as "${type}"`);
  }
  checkStringMap(doc['annotations'], 'manifest annotations');
  if (isIndexMediaType(type)) {
    const list = doc['manifests'];
    if (!Array.isArray(list)) throw new FormatError(`Index (${type}) has no "manifests" array`);
    list.forEach((d, i) => checkDescriptor(d, `manifests[${i}]`));
    return { kind: 'index', index: doc as unknown as ImageIndex, mediaType: type };
  }
  if (isManifestMediaType(type)) {
    checkDescriptor(doc['config'], 'config');
    const layers = doc['layers'];
    if (!Array.isArray(layers)) throw new FormatError(`Manifest (${type}) has no "layers" array`);
    layers.forEach((d, i) => checkDescriptor(d, `layers[${i}]`));
    if (doc['subject'] !== undefined) checkDescriptor(doc['subject'], 'subject');
    return { kind: 'manifest', manifest: doc as unknown as ImageManifest, mediaType: type };
  }
  throw new FormatError(
    `Unsupported manifest media type "${type}" (expected ${[OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST].join(', ')})`,
  );
}

/** Parse and validate an image config blob (the parts this project uses). */
export function parseImageConfig(bytes: Buffer): ImageConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new FormatError(`Image config is not valid JSON: ${(e as Error).message}`, undefined, { cause: e });
  }
  if (!isObject(doc)) throw new FormatError('Image config is not a JSON object');
  const rootfs = doc['rootfs'];
  if (!isObject(rootfs) || !Array.isArray(rootfs['diff_ids'])) {
    throw new FormatError('Image config has no rootfs.diff_ids');
  }
  for (const d of rootfs['diff_ids'] as unknown[]) {
    if (typeof d !== 'string' || !isDigest(d)) {
      throw new FormatError(`Image config has an invalid diff_id ${JSON.stringify(d)}`);
    }
  }
  return doc as ImageConfig;
}

/** Node's process.arch to GOARCH. */
const GOARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** linux/<this machine's architecture> (arm gets variant v7, as containerd assumes). */
export function hostPlatform(): Platform {
  const architecture = GOARCH[process.arch] ?? process.arch;
  const p: Platform = { os: 'linux', architecture };
  if (architecture === 'arm') p.variant = 'v7';
  return p;
}

/** Parse "os/arch[/variant]", as `--platform` takes it ("linux/amd64", "linux/arm64/v8"). */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-zA-Z0-9._-]+$/.test(p))) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Invalid platform "${s}": expected os/arch or os/arch/variant, like linux/amd64`,
    );
  }
  const p: Platform = { os: parts[0]!.toLowerCase(), architecture: normalizeArch(parts[1]!.toLowerCase()) };
  if (parts[2] !== undefined) p.variant = parts[2].toLowerCase();
  return p;
}

function normalizeArch(a: string): string {
  switch (a) {
    case 'x86_64':
    case 'x86-64':
      return 'amd64';
    case 'aarch64':
      return 'arm64';
    case 'i386':
    case 'i686':
      return '386';
    default:
      return a;
  }
}

/** Variant with containerd's defaults folded in (arm64 is v8 unless said otherwise). */
function normVariant(arch: string, v: string | undefined): string | undefined {
  if (arch === 'arm64' && (v === undefined || v === '' || v === 'v8')) return undefined;
  if (v === '') return undefined;
  return v;
}

/**
 * Does a descriptor's platform satisfy the wanted one? os and architecture must be equal; a
 * wanted variant must equal the descriptor's (arm64 treats no variant as v8); a platform with
 * no variant wanted accepts any variant.
 */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (have === undefined) return false;
  if (want.os.toLowerCase() !== have.os.toLowerCase()) return false;
  const arch = normalizeArch(want.architecture.toLowerCase());
  if (arch !== normalizeArch(have.architecture.toLowerCase())) return false;
  const wv = normVariant(arch, want.variant);
  if (wv === undefined && (want.variant === undefined || want.variant === '')) return true;
  return wv === normVariant(arch, have.variant);
}

export function formatPlatform(p: Platform | undefined): string {
  if (p === undefined) return 'unknown';
  return p.variant !== undefined && p.variant !== ''
    ? `${p.os}/${p.architecture}/${p.variant}`
    : `${p.os}/${p.architecture}`;
}

/**
 * Pick the manifest of one platform from an index: the first exact match (variant included),
 * else the first compatible one. With `prefer`, compatible entries it accepts come first (a
 * merged-platform index lists an OCI and a Nydus manifest for the same platform). Throws
 * ERR_NOT_FOUND naming the platforms the index has.
 */
export function selectPlatform(
  index: ImageIndex,
  want: Platform,
  where = 'index',
  prefer?: (d: Descriptor) => boolean,
): Descriptor {
  const compatible = index.manifests.filter(
    (d) => isManifestMediaType(d.mediaType) && platformMatches(want, d.platform),
  );
  const preferred = prefer === undefined ? [] : compatible.filter(prefer);
  const candidates = preferred.length > 0 ? preferred : compatible;
  const exact = candidates.find(
    (d) =>
      normVariant(d.platform!.architecture, d.platform!.variant) ===
      normVariant(want.architecture, want.variant),
  );
  const pick = exact ?? candidates[0];
  if (pick !== undefined) return pick;
  const have = index.manifests
    .filter((d) => d.platform !== undefined)
    .map((d) => formatPlatform(d.platform))
    .filter((p) => p !== 'unknown/unknown');
  throw new NydusError(
    'ERR_NOT_FOUND',
    `No manifest for platform ${formatPlatform(want)} in ${where}; it has ${have.length > 0 ? [...new Set(have)].join(', ') : 'no platforms'}`,
  );
}
