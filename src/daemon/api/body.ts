import type { IncomingMessage } from 'node:http';
import type { MountRequest } from './control.js';

/**
 * Request and response bodies of the nydusd HTTP API: reading a bounded request body, parsing
 * JSON the way upstream's serde structs accept it (with messages close to serde's), and writing
 * JSON that may hold bigint values (64-bit inode numbers and counters).
 */

/** Largest request body the API accepts. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Past this many bytes an oversized body is no longer drained: the connection is dropped. */
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

export type BodyResult =
  { kind: 'ok'; body: Buffer | undefined } | { kind: 'too-large'; bytes: number; drained: boolean };

/**
 * Read a request body of at most `limit` bytes. An empty body is `undefined` (upstream treats a
 * request without payload as having no body). An oversized body is read to its end and dropped
 * (so the client gets to read the error answer) unless it is absurdly large.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<BodyResult> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > MAX_DRAIN_BYTES) {
    req.resume();
    return Promise.resolve({ kind: 'too-large', bytes: declared, drained: false });
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let settled = false;
    const settle = (r: BodyResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total <= limit) chunks.push(chunk);
      else if (chunks.length > 0) chunks.length = 0;
      if (total > MAX_DRAIN_BYTES) {
        req.pause();
        settle({ kind: 'too-large', bytes: total, drained: false });
      }
    });
    req.on('end', () => {
      if (total > limit) settle({ kind: 'too-large', bytes: total, drained: true });
      else settle({ kind: 'ok', body: total === 0 ? undefined : Buffer.concat(chunks, total) });
    });
    const fail = (e: Error): void => {
      if (settled) return;
      settled = true;
      reject(e);
    };
    req.on('error', fail);
    // A client gone before the end of its body: nothing else would settle the read.
    req.on('close', () => fail(new Error('The client closed the connection before the end of the request')));
  });
}

/** A request body that does not parse into what the route expects (upstream's `ParseBody`). */
export class BodyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BodyError';
  }
}

/**
 * A bare object key with only its closing quote, right after `{` or `,`: `,config":`. This is
 * what the curl example of the project README yields once the shell has eaten one quote.
 */
const BARE_KEY = /([{,]\s*)([A-Za-z_][A-Za-z0-9_-]*)"(\s*:)/g;

/** Insert the missing opening quote of keys written as `key":` (see BARE_KEY). */
export function repairBareKeys(text: string): string {
  return text.replace(BARE_KEY, '$1"$2"$3');
}

/**
 * Parse a JSON body. With `repair`, a body that is not strict JSON gets one more chance with its
 * bare keys quoted (repairBareKeys); the strict parse error is reported when that fails too.
 */
export function parseJson(body: Buffer, repair = false): unknown {
  const text = body.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    if (repair) {
      const fixed = repairBareKeys(text);
      if (fixed !== text) {
        try {
          return JSON.parse(fixed) as unknown;
        } catch {
          // report the strict error below
        }
      }
    }
    throw new BodyError(e instanceof Error ? e.message : String(e));
  }
}

/** serde's name for the JSON type of a value, as in `invalid type: integer `1`, expected ...`. */
function jsonKind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'sequence';
  switch (typeof v) {
    case 'string':
      return `string ${JSON.stringify(v)}`;
    case 'number':
      return Number.isInteger(v) ? `integer \`${v}\`` : `floating point \`${v}\``;
    case 'boolean':
      return `boolean \`${v}\``;
    default:
      return 'map';
  }
}

function invalidType(v: unknown, expected: string): BodyError {
  return new BodyError(`invalid type: ${jsonKind(v)}, expected ${expected}`);
}

/** The body as a JSON object (a map), or a BodyError naming the struct it should have been. */
export function asObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalidType(v, what);
  return v as Record<string, unknown>;
}

/** A required string field. */
export function requiredString(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (v === undefined) throw new BodyError(`missing field \`${key}\``);
  if (typeof v !== 'string') throw invalidType(v, 'a string');
  return v;
}

/** An optional string field (absent or null is `undefined`). */
export function optionalString(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalidType(v, 'a string');
  return v;
}

/** An optional list of strings (absent or null is `undefined`). */
export function optionalStringList(o: Record<string, unknown>, key: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw invalidType(v, 'a sequence');
  return v.map((item) => {
    if (typeof item !== 'string') throw invalidType(item, 'a string');
    return item;
  });
}

/** A flat map of strings, as upstream's `Config` (`HashMap<String, String>`). */
export function stringMap(v: unknown): Record<string, string> {
  const o = asObject(v, 'a map');
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(o)) {
    if (typeof val !== 'string') throw invalidType(val, 'a string');
    out[k] = val;
  }
  return out;
}

/** `{"source", "fs_type", "config", "prefetch_files"}` (upstream's ApiMountCmd) as a MountRequest. */
export function mountRequestFrom(o: Record<string, unknown>): MountRequest {
  const source = requiredString(o, 'source');
  const fsType = optionalString(o, 'fs_type') ?? '';
  const config = requiredString(o, 'config');
  const prefetchFiles = optionalStringList(o, 'prefetch_files');
  return { source, fsType, config, ...(prefetchFiles !== undefined && { prefetchFiles }) };
}

/**
 * The legacy mount body of the project README: `{"source", "fstype", "mountpoint", "config"}`
 * where `config` names a config file. Returns the mountpoint, the request with `config` still as
 * given (the caller resolves a path to its content, see configLooksInline), or undefined when the
 * object carries no `mountpoint`.
 */
export function legacyMountFrom(
  o: Record<string, unknown>,
): { mountpoint: string; req: MountRequest } | undefined {
  const mountpoint = optionalString(o, 'mountpoint');
  if (mountpoint === undefined) return undefined;
  const source = requiredString(o, 'source');
  const fsType = optionalString(o, 'fs_type') ?? optionalString(o, 'fstype') ?? 'rafs';
  const config = requiredString(o, 'config');
  const prefetchFiles = optionalStringList(o, 'prefetch_files');
  return {
    mountpoint,
    req: { source, fsType, config, ...(prefetchFiles !== undefined && { prefetchFiles }) },
  };
}

/** Whether a legacy `config` value is the config itself rather than the path of a file. */
export function configLooksInline(config: string): boolean {
  return config.trimStart().startsWith('{') || config.includes('\n');
}

const BIGINT_NONCE = `${process.pid}x${Math.random().toString(36).slice(2)}`;
const BIGINT_TAG = `\u0000bigint-${BIGINT_NONCE}:`;
// The tag as JSON.stringify writes it: the NUL character comes out as the six characters \u0000.
const BIGINT_TAGGED = new RegExp(`"\\\\u0000bigint-${BIGINT_NONCE}:(-?\\d+)"`, 'g');

/** JSON text of a response value; bigint values are written as plain JSON numbers. */
export function jsonText(value: unknown): string {
  let sawBigint = false;
  const text = JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'bigint') {
      sawBigint = true;
      return `${BIGINT_TAG}${v.toString()}`;
    }
    return v;
  }) as string | undefined;
  if (text === undefined) return 'null';
  return sawBigint ? text.replace(BIGINT_TAGGED, '$1') : text;
}
