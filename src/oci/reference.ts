import { NydusError } from '../errors/errors.js';

/**
 * Image references as users type them (the distribution reference grammar):
 * `[host[:port]/]path[:tag][@digest]`. A first component containing '.' or ':' (or equal to
 * `localhost`) is a registry host; otherwise the host is docker.io and a one-component path gets
 * the `library/` namespace. Without tag and digest the tag is `latest`.
 */
export interface Reference {
  /** "docker.io" for bare names, "127.0.0.1:5000", "localhost:5000". */
  host: string;
  /** "library/busybox", "ns/name". */
  repository: string;
  tag: string | undefined;
  /** "sha256:..." */
  digest: string | undefined;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);
const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DOMAIN_LABEL = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const MAX_NAME = 255;

/** Hex lengths of the digest algorithms we can verify. */
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

function invalid(input: string, why: string): NydusError {
  return new NydusError('ERR_INVALID_ARG', `Invalid image reference "${input}": ${why}`);
}

/** True when `s` is "sha256:<64 hex>" (or sha512). */
export function isDigest(s: string): boolean {
  const m = /^([a-z0-9]+):([0-9a-f]+)$/.exec(s);
  if (m === null) return false;
  return DIGEST_HEX_LENGTH[m[1]!] === m[2]!.length;
}

/** Throws ERR_INVALID_ARG unless `s` is a digest this implementation can verify. */
export function checkDigest(s: string, what = 'digest'): string {
  if (!isDigest(s)) {
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Invalid ${what} "${s}": expected "sha256:" followed by 64 lowercase hex digits`,
    );
  }
  return s;
}

function validHost(host: string): boolean {
  let name = host;
  let port: string | undefined;
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    if (end < 0) return false;
    const rest = host.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return false;
    return /^[0-9a-fA-F:.]+$/.test(host.slice(1, end));
  }
  const colon = host.lastIndexOf(':');
  if (colon >= 0) {
    name = host.slice(0, colon);
    port = host.slice(colon + 1);
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return false;
  }
  if (name === '') return false;
  return name.split('.').every((l) => DOMAIN_LABEL.test(l));
}

/** Parse a reference as a user typed it; throws ERR_INVALID_ARG with the reason. */
export function parseReference(input: string): Reference {
  const s = input.trim();
  if (s === '') throw invalid(input, 'it is empty');
  if (s.includes('://')) throw invalid(input, 'a reference has no URL scheme');

  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(input, `"${digest}" is not a digest`);
    const algo = digest.slice(0, digest.indexOf(':'));
    const hexLen = DIGEST_HEX_LENGTH[algo];
    if (hexLen === undefined) throw invalid(input, `unsupported digest algorithm "${algo}"`);
    if (!new RegExp(`^[0-9a-f]{${hexLen}}$`).test(digest.slice(algo.length + 1))) {
      throw invalid(input, `a ${algo} digest has ${hexLen} lowercase hex digits`);
    }
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) {
      throw invalid(input, `tag "${tag}" must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'`);
    }
  }
  if (rest === '') throw invalid(input, 'the repository name is empty');

  let host: string;
  let path: string;
  const slash = rest.indexOf('/');
  const first = slash < 0 ? rest : rest.slice(0, slash);
  if (
    slash >= 0 &&
    (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))
  ) {
    host = first;
    path = rest.slice(slash + 1);
    if (!validHost(host)) throw invalid(input, `"${host}" is not a valid registry host`);
  } else {
    host = DOCKER_HUB;
    path = rest;
  }
  if (DOCKER_HUB_ALIASES.has(host.toLowerCase())) {
    host = DOCKER_HUB;
    if (!path.includes('/')) path = `library/${path}`;
  }
  if (path === '') throw invalid(input, 'the repository name is empty');
  for (const comp of path.split('/')) {
    if (!PATH_COMPONENT.test(comp)) {
      const why =
        comp === ''
          ? 'the repository name has an empty path component'
          : `repository path component "${comp}" must be lowercase letters and digits, separated by '.', '_', '__' or '-'`;
      throw invalid(input, why);
    }
  }
  if (host.length + 1 + path.length > MAX_NAME) {
    throw invalid(input, `the name is longer than ${MAX_NAME} characters`);
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { host, repository: path, tag, digest };
}

/** Canonical text: "host/repo:tag", "host/repo@digest" or "host/repo:tag@digest". */
export function formatReference(r: Reference): string {
  let s = `${r.host}/${r.repository}`;
  if (r.tag !== undefined) s += `:${r.tag}`;
  if (r.digest !== undefined) s += `@${r.digest}`;
  return s;
}

/** What to ask the registry for: the digest when there is one, else the tag. */
export function referenceTagOrDigest(r: Reference): string {
  return r.digest ?? r.tag ?? 'latest';
}

/** True for docker.io and its aliases. */
export function isDockerHub(host: string): boolean {
  return DOCKER_HUB_ALIASES.has(host.toLowerCase());
}

/** The host that serves the registry API for a reference host (docker.io has its own). */
export function registryApiHost(host: string): string {
  return isDockerHub(host) ? DOCKER_HUB_API_HOST : host;
}
