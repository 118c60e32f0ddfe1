/**
 * Key paths name the place in a config a message is about: `device.backend.config.dir`,
 * `external_backends[0].type`, `backend["http-proxy"]`... Keys that are not plain identifiers
 * (a dot, a space) are shown quoted in brackets so the path stays unambiguous.
 */

export type KeyPath = readonly (string | number)[];

const PLAIN = /^[A-Za-z0-9_-]+$/;

export function formatKeyPath(path: KeyPath): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else if (PLAIN.test(k)) out += out === '' ? k : `.${k}`;
    else out += `[${JSON.stringify(k)}]`;
  }
  return out;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** The value at `path` inside a parsed document, or undefined. */
export function valueAt(doc: unknown, path: KeyPath): unknown {
  let v = doc;
  for (const k of path) {
    if (typeof k === 'number') v = Array.isArray(v) ? (v[k] as unknown) : undefined;
    else v = isPlainObject(v) && Object.hasOwn(v, k) ? v[k] : undefined;
    if (v === undefined) return undefined;
  }
  return v;
}

/** A value as a message shows it: strings quoted and cut short, containers by kind. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') {
    const s = JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}...` : v);
    return s;
  }
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  return 'an object';
}
