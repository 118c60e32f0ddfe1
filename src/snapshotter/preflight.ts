import { readFile } from 'node:fs/promises';
import { NydusError, errorText } from '../errors/errors.js';
import { parseBootstrap } from '../format/bootstrap.js';
import type { Logger } from '../log/logger.js';
import { RegistryClient } from '../registry/client.js';
import { decodeUserPassword } from '../registry/docker-config.js';
import { backendOf, type JsonObject } from './nydusd-config.js';

/**
 * Checks before a nydusd is started for an image, so a broken image or a refused credential is a
 * clear error on the Prepare that needs it (and so to containerd's client) instead of a daemon
 * that starts and then fails every read: the bootstrap must parse, and for the registry backend
 * the registry must let these credentials read the image's first blob.
 */

const CHECK_TIMEOUT_MS = 10_000;

/** Parse the bootstrap (superblock and tables); returns the blob ids it names. */
export async function checkBootstrap(path: string, image: string): Promise<string[]> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw new NydusError(
      'ERR_IO',
      `Cannot read the bootstrap of image ${image} ("${path}"): ${errorText(e)}`,
    );
  }
  try {
    return parseBootstrap(buf).blobs.map((b) => b.blobId);
  } catch (e) {
    throw new NydusError(
      'ERR_FORMAT',
      `The bootstrap of image ${image} is corrupt ("${path}"): ${errorText(e)}`,
    );
  }
}

function str(o: JsonObject, k: string): string | undefined {
  const v = o[k];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** HEAD the first blob with the config's registry settings: refused credentials or a missing
 * blob are errors; a registry that cannot be reached now is only logged (the cache may hold
 * the data, and nydusd retries). */
export async function checkRegistryAccess(
  cfg: JsonObject,
  blobIds: string[],
  image: string,
  log: Logger,
): Promise<void> {
  const { type, config } = backendOf(cfg);
  if (type !== 'registry' || blobIds.length === 0) return;
  const host = str(config, 'host');
  const repo = str(config, 'repo');
  if (host === undefined || repo === undefined) return;
  const auth = str(config, 'auth');
  const credentials = auth !== undefined ? decodeUserPassword(auth) : undefined;
  const token = str(config, 'registry_token');
  const caFiles = Array.isArray(config['ca_cert_files'])
    ? (config['ca_cert_files'] as unknown[]).filter((c): c is string => typeof c === 'string')
    : [];
  const client = new RegistryClient(host, {
    plainHttp: config['scheme'] === 'http',
    insecure: config['skip_verify'] === true,
    caCertFiles: caFiles,
    timeoutMs: CHECK_TIMEOUT_MS,
    connectTimeoutMs: CHECK_TIMEOUT_MS,
    retries: 1,
    // Only the credentials of the config: never the snapshotter's own Docker config lookup.
    env: {},
    ...(credentials !== undefined ? { credentials } : {}),
    ...(token !== undefined ? { registryToken: token } : {}),
  });
  const digest = `sha256:${blobIds[0]!}`;
  let size: number | undefined;
  try {
    size = await client.repository(repo).headBlob(digest);
  } catch (e) {
    if (e instanceof NydusError && e.code === 'ERR_AUTH') {
      throw new NydusError(
        'ERR_AUTH',
        `Registry ${host} refused access to image ${image}${auth === undefined && token === undefined ? ' (no credentials found: give them in the Docker config, the pull labels or through CRI)' : ''}: ${e.message}`,
      );
    }
    log.warn(`Cannot check registry access for image ${image} now: ${errorText(e)}`);
    return;
  } finally {
    await client.close?.();
  }
  if (size === undefined) {
    throw new NydusError(
      'ERR_NOT_FOUND',
      `Blob ${digest} of image ${image} is not in repository ${host}/${repo}`,
    );
  }
}
