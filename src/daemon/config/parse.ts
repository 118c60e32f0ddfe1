import { createRequire } from 'node:module';
import type * as Toml from 'smol-toml';
import type * as z from 'zod';
import { errorText, NydusError } from '../../errors/errors.js';
import { JsoncSyntaxError, MAX_JSON_DEPTH, parseJsonc } from './jsonc.js';
import { describeValue, formatKeyPath, isPlainObject, valueAt, type KeyPath } from './key-path.js';
import { convertV1, copyFsPrefetchToCache, isV1Document, v1PathOf } from './legacy-v1.js';
import { fastParseConfig } from './fast.js';
import { MAX_CONFIG_SIZE } from './limits.js';
import type { DaemonConfig } from './schema.js';
import { defineSchemas } from './schema-define.js';
import { validateConfig, type Finding } from './validate.js';

/**
 * zod and smol-toml load on first use, synchronously (their CommonJS builds): a daemon whose
 * config is JSON and right (fast.ts) never loads them, which keeps ~10 MiB out of its RSS.
 */
const requireLazy = createRequire(import.meta.url);
let zodSchema: ReturnType<typeof defineSchemas>['daemonConfigSchema'] | undefined;
function daemonConfigSchema(): ReturnType<typeof defineSchemas>['daemonConfigSchema'] {
  zodSchema ??= defineSchemas(requireLazy('zod') as typeof z).daemonConfigSchema;
  return zodSchema;
}
function smolToml(): typeof Toml {
  return requireLazy('smol-toml') as typeof Toml;
}

/**
 * `parseDaemonConfig`: text of a nydusd `--config` file (or the `config` string of an API mount
 * request) to a checked, normalized v2 `DaemonConfig`.
 *
 * Order, as upstream's `ConfigV2::from_str`: v2 JSON, v2 TOML, legacy v1 JSON (converted to v2).
 * Upstream tries each serde parse in turn and keeps the first that deserializes; here the syntax
 * decides (JSON if it parses as JSON, else TOML) and then the keys decide (`version` present: v2;
 * `device` present: v1), so that an error names the key the user wrote in the format they wrote.
 *
 * Differences from upstream, on purpose (each is a test in test/daemon/config/):
 * - JSON may carry `//` and `/* *\/` comments, trailing commas and a forgotten comma at a line end
 *   (jsonc.ts), as upstream's documentation writes its examples;
 * - unknown keys are reported as warnings naming their path (`device.backend.config.readahead:
 *   unknown key, ignored`); upstream ignores them silently;
 * - a wrong type or value refuses the whole config with the key path and what is wrong, where
 *   upstream says only "failed to parse configuration information";
 * - v1: `mode` may be omitted, `http-proxy` is accepted (legacy-v1.ts);
 * - the backend `proxy` given as a URL string with `proxy_fallback`, `proxy_ping_url`,
 *   `proxy_check_interval` beside it (the old form in the nydus README) is read as the `proxy`
 *   table, with a warning;
 * - a v2 prefetch table without `enable` means prefetch off, with a warning (upstream refuses);
 * - `cache` and `rafs` are filled with defaults when absent; `backend` is required; the cache
 *   type is normalized (`blobcache` -> `filecache`, `""` -> `dummycache`) (schema.ts);
 * - backend and cache tables the chosen type does not read are dropped, with a warning
 *   (validate.ts);
 * - a `version` of the wrong type is refused as such rather than retried as v1;
 * - `opts.template` accepts a config that another component completes (validate.ts).
 */

export interface ParseConfigOptions {
  /** Where the text came from (a file path, "--localfs-dir", "mount request"), for messages. */
  source?: string;
  /**
   * The config is a template another component fills in (the snapshotter's `--nydusd-config`
   * has no registry host or repo): skip the checks for required keys and tables.
   */
  template?: boolean;
}

export type ConfigFormat = 'v2-json' | 'v2-toml' | 'v1-json';

export interface ParsedConfig {
  config: DaemonConfig;
  /** One line each: `<key.path>: <what>`; unknown keys say `unknown key, ignored`. */
  warnings: string[];
  format: ConfigFormat;
}

/** A refused config. `problems` lists each `<key.path>: <what is wrong>` the message joins. */
export class ConfigError extends NydusError {
  readonly problems: readonly string[];

  constructor(source: string | undefined, problems: readonly string[], options?: { cause?: unknown }) {
    super(
      'ERR_INVALID_ARG',
      `Invalid config${source === undefined ? '' : ` ${source}`}: ${problems.join('; ')}`,
      options,
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const TOML_MAX_DEPTH = MAX_JSON_DEPTH;

interface Document {
  doc: unknown;
  format: 'json' | 'toml';
  warnings: string[];
}

function decode(input: string | Uint8Array, source: string | undefined): string {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength;
  if (size > MAX_CONFIG_SIZE) {
    throw new ConfigError(source, [`${size} bytes, larger than the ${MAX_CONFIG_SIZE}-byte limit`]);
  }
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch (e) {
      throw new ConfigError(source, ['not UTF-8 text'], { cause: e });
    }
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Whether the text, past whitespace and comments, opens with `{`: then it is meant as JSON. */
function opensLikeJson(text: string): boolean {
  let i = 0;
  for (;;) {
    while (i < text.length && /\s/.test(text[i] as string)) i++;
    if (text.startsWith('//', i)) {
      const nl = text.indexOf('\n', i);
      if (nl < 0) return false;
      i = nl + 1;
    } else if (text.startsWith('/*', i)) {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) return false;
      i = end + 2;
    } else return text[i] === '{';
  }
}

function readDocument(text: string, source: string | undefined): Document {
  if (text.trim() === '') throw new ConfigError(source, ['empty']);
  let jsonError: JsoncSyntaxError;
  try {
    const r = parseJsonc(text);
    return { doc: r.value, format: 'json', warnings: r.warnings };
  } catch (e) {
    if (!(e instanceof JsoncSyntaxError)) throw e;
    jsonError = e;
  }
  // Text that opens like a JSON object was meant as JSON: a TOML error would only confuse.
  if (opensLikeJson(text)) throw new ConfigError(source, [`not valid JSON: ${jsonError.message}`]);
  try {
    const doc = smolToml().parse(text, { maxDepth: TOML_MAX_DEPTH, integersAsBigInt: 'asNeeded' });
    return { doc, format: 'toml', warnings: [] };
  } catch (e) {
    const toml =
      e instanceof smolToml().TomlError
        ? `line ${e.line} column ${e.column}: ${(e.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '')}`
        : errorText(e);
    throw new ConfigError(source, [`neither JSON (${jsonError.message}) nor TOML (${toml})`], { cause: e });
  }
}

/** How a message names the type zod expected. */
const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  // Every number in the config is an integer.
  number: 'an integer',
  boolean: 'true or false',
  object: 'an object',
  record: 'an object',
  array: 'an array',
};

/** The phrase for a zod issue, given the value found at its path. */
function describeIssue(issue: z.core.$ZodIssue, value: unknown): string {
  let expected: string | undefined;
  if (issue.code === 'invalid_type') {
    expected = TYPE_NAMES[issue.expected] ?? issue.expected;
  } else if (issue.code === 'invalid_value') {
    const vs = issue.values.map((v) => describeValue(v));
    expected = vs.length === 1 ? vs[0] : vs.length === 2 ? `${vs[0]} or ${vs[1]}` : `one of ${vs.join(', ')}`;
  } else return issue.message;
  return value === undefined
    ? `missing, expected ${expected}`
    : `expected ${expected}, got ${describeValue(value)}`;
}

/** Every path in `doc`, in document order, that is in `wanted` (keyed by formatKeyPath). */
function inDocumentOrder(doc: unknown, wanted: Set<string>): string[] {
  const out: string[] = [];
  const walk = (v: unknown, path: (string | number)[], depth: number): void => {
    if (depth > MAX_JSON_DEPTH || out.length === wanted.size) return;
    const entries: [string | number, unknown][] = Array.isArray(v)
      ? v.map((x, i) => [i, x])
      : isPlainObject(v)
        ? Object.entries(v)
        : [];
    for (const [k, x] of entries) {
      path.push(k);
      const key = formatKeyPath(path);
      if (wanted.has(key)) out.push(key);
      else walk(x, path, depth + 1);
      path.pop();
    }
  };
  walk(doc, [], 0);
  return out;
}

/** Drop keys whose value is undefined (an upstream `Option` given as null), so absent is absent. */
function pruneUndefined(v: unknown): void {
  if (Array.isArray(v)) v.forEach(pruneUndefined);
  else if (isPlainObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete v[k];
      else pruneUndefined(x);
    }
  }
}

function deleteAt(doc: unknown, path: KeyPath): void {
  const parent = valueAt(doc, path.slice(0, -1));
  const key = path[path.length - 1];
  if (isPlainObject(parent) && typeof key === 'string') delete parent[key];
}

/**
 * The old flat proxy keys of a backend table (`"proxy": "http://..."`, `proxy_fallback`,
 * `proxy_ping_url`, `proxy_check_interval`) folded into the `proxy` table.
 */
const LEGACY_PROXY_KEYS: Record<string, string> = {
  proxy_fallback: 'fallback',
  proxy_ping_url: 'ping_url',
  proxy_check_interval: 'check_interval',
};

function upgradeLegacyProxy(table: unknown, at: KeyPath, warnings: Finding[]): void {
  if (!isPlainObject(table)) return;
  const old = table['proxy'];
  // A proxy that is neither the old string nor a table is left for the schema to refuse.
  if (old !== undefined && typeof old !== 'string' && !isPlainObject(old)) return;
  const flat = Object.keys(LEGACY_PROXY_KEYS).filter((k) => Object.hasOwn(table, k));
  if (typeof old !== 'string' && flat.length === 0) return;
  const proxy: Record<string, unknown> = isPlainObject(old) ? old : {};
  if (typeof old === 'string') {
    warnings.push({ path: [...at, 'proxy'], message: 'a URL string is the old form, read as proxy.url' });
    proxy['url'] = old;
  }
  for (const k of flat) {
    const to = LEGACY_PROXY_KEYS[k] as string;
    warnings.push({ path: [...at, k], message: `old form, read as proxy.${to}` });
    if (!Object.hasOwn(proxy, to)) proxy[to] = table[k];
    delete table[k];
  }
  table['proxy'] = proxy;
}

/** Check a document (a parsed JSON object or TOML table) and build the config. */
function buildConfig(
  doc: Record<string, unknown>,
  syntax: Document['format'],
  opts: ParseConfigOptions,
  leading: string[],
): ParsedConfig {
  const { source } = opts;
  const v1 = syntax === 'json' && isV1Document(doc);
  if (!v1 && !Object.hasOwn(doc, 'version') && syntax === 'json') {
    throw new ConfigError(source, ['neither a v2 config ("version": 2) nor a v1 config ("device")']);
  }
  const userPath = (p: KeyPath): string => formatKeyPath(v1 ? v1PathOf(p) : p);
  const notes: Finding[] = [];
  let raw: Record<string, unknown>;
  let unknownV1: KeyPath[] = [];
  if (v1) {
    const conv = convertV1(doc);
    if (conv.problems.length > 0) {
      throw new ConfigError(
        source,
        conv.problems.map(
          (p) => `${formatKeyPath(p.path)}: ${p.message}, got ${describeValue(valueAt(doc, p.path))}`,
        ),
      );
    }
    raw = conv.v2;
    unknownV1 = conv.unknown;
    const backend = raw['backend'];
    if (isPlainObject(backend) && typeof backend['type'] === 'string') {
      upgradeLegacyProxy(backend[backend['type']], ['backend', backend['type']], notes);
    }
  } else {
    raw = doc;
    const backend = raw['backend'];
    if (isPlainObject(backend)) {
      for (const t of ['oss', 's3', 'registry', 'http-proxy'])
        upgradeLegacyProxy(backend[t], ['backend', t], notes);
    }
    for (const at of [
      ['cache', 'prefetch'],
      ['rafs', 'prefetch'],
    ]) {
      const p = valueAt(raw, at);
      if (isPlainObject(p) && !Object.hasOwn(p, 'enable')) {
        notes.push({ path: [...at, 'enable'], message: 'missing, prefetch stays off' });
      }
    }
  }

  const fast = fastParseConfig(raw);
  let parsed =
    fast !== undefined ? ({ success: true, data: fast } as const) : daemonConfigSchema().safeParse(raw);
  const unknown: KeyPath[] = [];
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const k of issue.keys) unknown.push([...(issue.path as KeyPath), k]);
      } else {
        const p = issue.path as KeyPath;
        problems.push(`${userPath(p)}: ${describeIssue(issue, valueAt(raw, p))}`);
      }
    }
    if (problems.length > 0) throw new ConfigError(source, [...new Set(problems)]);
  }

  // Unknown keys, reported in the order the user wrote them, by the path the user wrote.
  const wanted = new Set([...unknownV1.map(formatKeyPath), ...unknown.map(userPath)]);
  const unknownWarnings = inDocumentOrder(doc, wanted).map((k) => `${k}: unknown key, ignored`);

  if (!parsed.success) {
    for (const p of unknown) deleteAt(raw, p);
    parsed = daemonConfigSchema().safeParse(raw);
    if (!parsed.success) {
      // Removing keys cannot make a value wrong; this is a bug if it happens.
      throw new ConfigError(
        source,
        parsed.error.issues.map((i) => `${userPath(i.path as KeyPath)}: ${i.message}`),
      );
    }
  }
  const config = parsed.data;
  pruneUndefined(config);
  if (v1) copyFsPrefetchToCache(config);

  const checked = validateConfig(config, opts.template === true ? { template: true } : {});
  if (checked.problems.length > 0) {
    throw new ConfigError(source, [
      ...new Set(checked.problems.map((f) => `${userPath(f.path)}: ${f.message}`)),
    ]);
  }
  const warnings = [
    ...leading,
    ...unknownWarnings,
    ...[...notes, ...checked.warnings].map((f) => `${userPath(f.path)}: ${f.message}`),
  ];
  return { config, warnings, format: v1 ? 'v1-json' : syntax === 'json' ? 'v2-json' : 'v2-toml' };
}

/**
 * Parse a nydusd daemon config: v2 JSON, v2 TOML or legacy v1 JSON, at most 1 MiB. Throws
 * `ConfigError` (a `NydusError` with code `ERR_INVALID_ARG`) naming the failing key path.
 */
export function parseDaemonConfig(input: string | Uint8Array, opts: ParseConfigOptions = {}): ParsedConfig {
  const text = decode(input, opts.source);
  const { doc, format, warnings } = readDocument(text, opts.source);
  if (!isPlainObject(doc)) {
    throw new ConfigError(opts.source, [`expected an object at the top level, got ${describeValue(doc)}`]);
  }
  return buildConfig(doc, format, opts, warnings);
}

/**
 * The config `nydusd -D/--localfs-dir <dir>` uses: localfs backend reading blobs from `dir`, a
 * blob cache in the same directory, direct mode, no digest validation. Upstream builds it as a v1
 * JSON text (plus `readahead` and cache `compressed` keys it then ignores); this builds the same
 * v1 document and converts it the same way.
 */
export function localfsShortcutConfig(dir: string): DaemonConfig {
  const doc = {
    device: {
      backend: { type: 'localfs', config: { dir } },
      cache: { type: 'blobcache', config: { work_dir: dir } },
    },
    mode: 'direct',
    digest_validate: false,
    iostats_files: false,
  };
  return buildConfig(doc, 'json', { source: '--localfs-dir' }, []).config;
}
