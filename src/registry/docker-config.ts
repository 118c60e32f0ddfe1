import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { NydusError, errorText } from '../errors/errors.js';
import { isDockerHub } from '../oci/reference.js';

/** Registry credentials: a user and password, or an identity (refresh) token. */
export type Credentials = { username: string; password: string } | { identityToken: string };

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

/** The Docker config file used for `env`: $DOCKER_CONFIG/config.json or ~/.docker/config.json. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env['DOCKER_CONFIG'];
  if (dir !== undefined && dir !== '') return join(dir, 'config.json');
  return join(env['HOME'] ?? homedir(), '.docker', 'config.json');
}

/** "https://host:5000/v1/" -> "host:5000" (lowercase). */
export function normalizeAuthKey(key: string): string {
  let k = key.trim();
  const scheme = k.indexOf('://');
  if (scheme >= 0) k = k.slice(scheme + 3);
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  return k.toLowerCase();
}

function sameHost(a: string, b: string): boolean {
  if (a === b) return true;
  return isDockerHub(a) && isDockerHub(b);
}

/**
 * Base64 of "user:password" (a Docker config `auth`, nydusd's registry `auth`) as credentials;
 * undefined when the decoded text has no colon.
 */
export function decodeUserPassword(b64: string): { username: string; password: string } | undefined {
  const text = Buffer.from(b64, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  return colon < 0 ? undefined : { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** Credentials in one `auths` entry, or undefined when it has none. */
export function credentialsFromEntry(entry: AuthEntry, where: string): Credentials | undefined {
  if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') {
    return { identityToken: entry.identitytoken };
  }
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const c = decodeUserPassword(entry.auth);
    if (c === undefined) {
      throw new NydusError('ERR_INVALID_ARG', `The "auth" of ${where} is not base64 of "user:password"`);
    }
    return c;
  }
  if (typeof entry.username === 'string' && entry.username !== '') {
    return { username: entry.username, password: typeof entry.password === 'string' ? entry.password : '' };
  }
  return undefined;
}

/**
 * Credentials for a registry host from the Docker config ($DOCKER_CONFIG/config.json or
 * ~/.docker/config.json): `auths.<host>` with `auth` (base64 user:password), `username` and
 * `password`, or `identitytoken`. Keys may be URLs ("https://host/v1/"); docker.io matches its
 * aliases. A missing file means no credentials; an unreadable or invalid one is an error.
 * Credential helpers (`credsStore`, `credHelpers`) are not run.
 */
export async function credentialsFor(
  host: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Credentials | undefined> {
  const file = dockerConfigPath(env);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') {
      return undefined;
    }
    throw new NydusError('ERR_IO', `Cannot read the Docker config "${file}": ${errorText(e)}`, { cause: e });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `The Docker config "${file}" is not valid JSON: ${errorText(e)}`);
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const auths = (doc as { auths?: unknown }).auths;
  if (typeof auths !== 'object' || auths === null) return undefined;
  const want = normalizeAuthKey(host);
  // An exact key wins over an alias or URL form.
  const entries = Object.entries(auths as Record<string, unknown>);
  entries.sort(([a], [b]) => Number(normalizeAuthKey(b) === b) - Number(normalizeAuthKey(a) === a));
  for (const [key, entry] of entries) {
    if (typeof entry !== 'object' || entry === null) continue;
    if (!sameHost(normalizeAuthKey(key), want)) continue;
    const c = credentialsFromEntry(entry, `auths["${key}"] in "${file}"`);
    if (c !== undefined) return c;
  }
  return undefined;
}
