import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { parse } from 'smol-toml';
import { request } from 'undici';
import { NydusError, errorText } from '../errors/errors.js';

/**
 * Registry mirrors from containerd-style `hosts.toml` files (upstream-surface §7.9): under
 * `[remote.mirrors_config] dir`, the file of a registry host is `<dir>/<host>_<port>_/hosts.toml`
 * for a host with a port, else (or then) `<dir>/<host>/hosts.toml`, then `<dir>/_default/hosts.toml`. Before each mount the first
 * mirror in file order that can pull and whose `ping_url` answers 2xx within 3 s is used (one
 * without `ping_url` is used at once); with none usable the origin registry is.
 */

export interface Mirror {
  scheme: string;
  /** host[:port] */
  host: string;
  caFiles: string[];
  skipVerify?: boolean;
  pingUrl?: string;
}

const PING_TIMEOUT_MS = 3_000;

function hostsFile(dir: string, host: string): string | undefined {
  // containerd's names: "<host>_<port>_" for a host with a port, then the host, then _default.
  const i = host.lastIndexOf(':');
  const names = i > 0 ? [`${host.slice(0, i)}_${host.slice(i + 1)}_`, host] : [host];
  for (const name of [...names, '_default']) {
    const p = join(dir, name, 'hosts.toml');
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** The mirrors configured for a registry host, in file order. */
export function mirrorsFor(dir: string, host: string): Mirror[] {
  const file = hostsFile(dir, host);
  if (file === undefined) return [];
  let doc: Record<string, unknown>;
  try {
    doc = parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new NydusError('ERR_INVALID_ARG', `Cannot read mirrors config "${file}": ${errorText(e)}`);
  }
  const hosts = doc['host'];
  if (typeof hosts !== 'object' || hosts === null) return [];
  const out: Mirror[] = [];
  for (const [url, v] of Object.entries(hosts as Record<string, unknown>)) {
    const t = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
    const caps = t['capabilities'];
    if (Array.isArray(caps) && !caps.includes('pull')) continue;
    let u: URL;
    try {
      u = new URL(url.includes('://') ? url : `https://${url}`);
    } catch {
      throw new NydusError('ERR_INVALID_ARG', `Mirror "${url}" in "${file}" is not a URL`);
    }
    const ca = t['ca'];
    const listed =
      typeof ca === 'string'
        ? [ca]
        : Array.isArray(ca)
          ? ca.filter((c): c is string => typeof c === 'string')
          : [];
    // A relative CA path is relative to the hosts.toml's directory, as containerd reads it.
    const caFiles = listed.map((c) => (isAbsolute(c) ? c : join(dirname(file), c)));
    out.push({
      scheme: u.protocol.replace(':', ''),
      host: u.host,
      caFiles,
      ...(typeof t['skip_verify'] === 'boolean' ? { skipVerify: t['skip_verify'] } : {}),
      ...(typeof t['ping_url'] === 'string' && t['ping_url'] !== '' ? { pingUrl: t['ping_url'] } : {}),
    });
  }
  return out;
}

async function pings(url: string): Promise<boolean> {
  try {
    const res = await request(url, {
      method: 'GET',
      headersTimeout: PING_TIMEOUT_MS,
      bodyTimeout: PING_TIMEOUT_MS,
      signal: AbortSignal.timeout(PING_TIMEOUT_MS),
    });
    await res.body.dump();
    return res.statusCode >= 200 && res.statusCode < 300;
  } catch {
    return false;
  }
}

/** The first usable mirror, or undefined (use the origin). */
export async function pickMirror(mirrors: Mirror[]): Promise<Mirror | undefined> {
  for (const m of mirrors) {
    if (m.pingUrl === undefined || (await pings(m.pingUrl))) return m;
  }
  return undefined;
}
