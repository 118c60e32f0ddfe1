import { readFileSync } from 'node:fs';
import { NydusError, errorText } from '../errors/errors.js';
import { registryApiHost, type Reference } from '../oci/reference.js';

/**
 * The nydusd config of one image: the template of `--nydusd-config` (upstream's v1 JSON as in
 * seed 003, or a v2 one) with the registry host and repository of the image, its credentials and
 * the snapshotter's cache directory filled in (upstream-surface §7.4).
 */

export type JsonObject = Record<string, unknown>;

/** The nydusd config of upstream's containerd setup document (seed 003), as it is written there. */
export const SEED_003_TEMPLATE: JsonObject = {
  device: {
    backend: {
      type: 'registry',
      config: { scheme: '', skip_verify: true, timeout: 5, connect_timeout: 5, retry_limit: 4, auth: '' },
    },
    cache: { type: 'blobcache', config: { work_dir: 'cache' } },
  },
  mode: 'direct',
  digest_validate: false,
  iostats_files: false,
  enable_xattr: true,
  fs_prefetch: { enable: true, threads_count: 4 },
};

/** What the snapshotter uses when no template file exists at the default path: seed 003's
 * config without background prefetch (which would fetch whole images and defeat lazy pulling). */
export const DEFAULT_TEMPLATE: JsonObject = {
  ...SEED_003_TEMPLATE,
  fs_prefetch: { enable: false, threads_count: 4 },
};

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Read a template. A missing file at the default path falls back to DEFAULT_TEMPLATE; a missing
 * file the user named, unreadable JSON or a shape that is neither v1 nor v2 is an error.
 */
export function loadTemplate(path: string, userGiven: boolean): JsonObject {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !userGiven)
      return structuredClone(DEFAULT_TEMPLATE);
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Cannot read the nydusd config template "${path}": ${errorText(e)}`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `The nydusd config template "${path}" is not valid JSON: ${errorText(e)}`,
    );
  }
  if (!isObject(doc))
    throw new NydusError('ERR_INVALID_ARG', `The nydusd config template "${path}" is not a JSON object`);
  if (doc['version'] === 2) {
    if (!isObject(doc['backend']))
      throw new NydusError(
        'ERR_INVALID_ARG',
        `The nydusd config template "${path}" (version 2) has no "backend" table`,
      );
  } else if (!isObject(doc['device']) || !isObject(doc['device']['backend'])) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `The nydusd config template "${path}" has no "device.backend" (v1) or "version": 2`,
    );
  }
  return doc;
}

export interface ImageAccess {
  ref: Reference;
  /** base64 `user:password`. */
  auth?: string;
  /** A bearer token (a keychain entry with a password and no user name). */
  registryToken?: string;
  /** Replaces the registry's scheme and host (a mirror from hosts.toml). */
  mirror?: { scheme: string; host: string; caFiles: string[]; skipVerify?: boolean };
}

function fillRegistry(cfg: JsonObject, a: ImageAccess): void {
  cfg['host'] = a.mirror?.host ?? registryApiHost(a.ref.host);
  cfg['repo'] = a.ref.repository;
  if (a.mirror !== undefined) {
    cfg['scheme'] = a.mirror.scheme;
    if (a.mirror.caFiles.length > 0) cfg['ca_cert_files'] = a.mirror.caFiles;
    if (a.mirror.skipVerify !== undefined) cfg['skip_verify'] = a.mirror.skipVerify;
  }
  if (a.auth !== undefined) cfg['auth'] = a.auth;
  if (a.registryToken !== undefined) cfg['registry_token'] = a.registryToken;
}

/** The config for one image: a deep copy of the template with the image's values filled in. */
export function imageConfig(template: JsonObject, a: ImageAccess, cacheDir: string, id: string): JsonObject {
  const cfg = structuredClone(template);
  if (cfg['version'] === 2) {
    cfg['id'] = id;
    const backend = cfg['backend'] as JsonObject;
    const type = backend['type'];
    if (type === 'registry') {
      const reg = isObject(backend['registry']) ? backend['registry'] : {};
      fillRegistry(reg, a);
      backend['registry'] = reg;
    }
    const cache = isObject(cfg['cache']) ? cfg['cache'] : { type: 'blobcache' };
    const ctype = cache['type'];
    if (ctype === 'blobcache' || ctype === 'filecache') {
      const fc = isObject(cache['filecache']) ? cache['filecache'] : {};
      fc['work_dir'] = cacheDir;
      cache['filecache'] = fc;
    }
    cfg['cache'] = cache;
    return cfg;
  }
  const device = cfg['device'] as JsonObject;
  device['id'] = id;
  const backend = device['backend'] as JsonObject;
  if (backend['type'] === 'registry') {
    const reg = isObject(backend['config']) ? backend['config'] : {};
    fillRegistry(reg, a);
    backend['config'] = reg;
  }
  const cache = isObject(device['cache']) ? device['cache'] : undefined;
  if (cache !== undefined && (cache['type'] === 'blobcache' || cache['type'] === 'filecache')) {
    const c = isObject(cache['config']) ? cache['config'] : {};
    c['work_dir'] = cacheDir;
    cache['config'] = c;
  }
  return cfg;
}

/** The backend of a config as `{type, config}` (for the system API and for logs). */
export function backendOf(cfg: JsonObject): { type: string; config: JsonObject } {
  if (cfg['version'] === 2) {
    const b = cfg['backend'] as JsonObject;
    const type = String(b['type']);
    return { type, config: isObject(b[type]) ? b[type] : {} };
  }
  const b = (cfg['device'] as JsonObject)['backend'] as JsonObject;
  return { type: String(b['type']), config: isObject(b['config']) ? b['config'] : {} };
}
