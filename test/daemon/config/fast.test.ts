import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BACKEND_TABLES,
  DAEMON_CONFIG,
  defaults,
  FILECACHE,
  FSCACHE,
  fastParseConfig,
} from '../../../src/daemon/config/fast.js';
import {
  BACKEND_TABLE_SCHEMAS,
  daemonConfigSchema,
  fileCacheSchema,
  fsCacheSchema,
} from '../../../src/daemon/config/schema.js';
import { prng } from '../../helpers/prng.js';

/**
 * fast.ts (the zod-free reader a daemon uses for a right config) against schema.ts (zod): the
 * same keys in the same order at every level, and, for any document, either "not sure" or
 * exactly zod's output.
 */

/** zod's output with the keys whose value is undefined dropped (as parse.ts prunes them). */
function zodParse(raw: unknown): unknown {
  const r = daemonConfigSchema.safeParse(structuredClone(raw));
  return r.success ? JSON.parse(JSON.stringify(r.data)) : undefined;
}

/** The object schema inside defaults, optionals, preprocessing and arrays (zod v4 internals). */
function innerObject(s: unknown): { shape: Record<string, unknown> } | undefined {
  let cur = s as { _zod: { def: Record<string, unknown> } };
  for (let i = 0; i < 10; i++) {
    const def = cur._zod.def;
    if (def['type'] === 'object') return { shape: def['shape'] as Record<string, unknown> };
    const next = def['innerType'] ?? (def['type'] === 'pipe' ? def['out'] : def['element']);
    if (next === undefined) return undefined;
    cur = next as typeof cur;
  }
  return undefined;
}

type Spec = { k: string; shape?: Record<string, Spec>; of?: Spec };

function sameKeys(zod: unknown, shape: Record<string, Spec>, at: string): void {
  const z = innerObject(zod);
  assert.ok(z !== undefined, `${at}: zod has an object here`);
  assert.deepEqual(Object.keys(shape), Object.keys(z.shape), `${at}: keys and their order`);
  for (const [k, s] of Object.entries(shape)) {
    const sub = s.k === 'obj' ? s.shape : s.k === 'array' && s.of?.k === 'obj' ? s.of.shape : undefined;
    if (sub !== undefined) sameKeys(z.shape[k], sub, `${at}.${k}`);
    else assert.equal(innerObject(z.shape[k]), undefined, `${at}.${k}: zod has an object, fast.ts not`);
  }
}

test('fast: every table has the keys of schema.ts, in its order', () => {
  sameKeys(daemonConfigSchema, DAEMON_CONFIG, 'config');
  for (const [type, schema] of Object.entries(BACKEND_TABLE_SCHEMAS)) {
    sameKeys(schema, BACKEND_TABLES[type] ?? {}, `backend.${type}`);
  }
});

test('fast: the default tables are zod parse({}) of each', () => {
  for (const [type, schema] of Object.entries(BACKEND_TABLE_SCHEMAS)) {
    assert.equal(
      JSON.stringify(defaults(BACKEND_TABLES[type] ?? {})),
      JSON.stringify(schema.parse({})),
      type,
    );
  }
  assert.equal(JSON.stringify(defaults(FILECACHE)), JSON.stringify(fileCacheSchema.parse({})));
  assert.equal(JSON.stringify(defaults(FSCACHE)), JSON.stringify(fsCacheSchema.parse({})));
});

const mirror = { host: 'http://m:65001', headers: { 'X-A': 'b' }, failure_limit: 3 };
const proxy = { url: '', fallback: false, check_interval: 9 };

/** Right configs: fast.ts must read each, exactly as zod does. */
const RIGHT: Record<string, unknown>[] = [
  // Keys in another order than schema.ts: the output takes the schema's order.
  {
    rafs: { prefetch: { threads: 2, enable: true }, mode: 'cached' },
    cache: { validate: true, type: 'blobcache', filecache: { encryption_key: 'k', work_dir: '/w' } },
    backend: { localfs: { dir: '/d', blob_file: 'x' }, type: 'localfs' },
    version: 2,
    id: 'a',
  },
  { version: 2, backend: { type: 'localfs', localfs: { dir: '/blobs' } } },
  {
    version: 2,
    id: 'x',
    backend: { type: 'localfs', localfs: { dir: '/b' } },
    cache: { type: '' },
    rafs: { mode: 'direct', prefetch: { enable: true } },
  },
  {
    version: 2,
    backend: {
      type: 'registry',
      localdisk: {},
      localfs: {},
      oss: { proxy: {}, mirrors: [mirror] },
      s3: { region: 'r', proxy, mirrors: null },
      registry: {
        host: 'h',
        repo: 'r',
        auth: null,
        registry_token: 't',
        mirrors: [mirror, { host: 'https://x' }],
      },
      'http-proxy': { addr: '/sock', retry_limit: 255, timeout: 4294967295 },
    },
    external_backends: [{ patch: { a: 'b' }, type: 'x', config: {} }],
    cache: {
      type: 'blobcache',
      compressed: true,
      validate: true,
      prefetch: {
        enable: true,
        threads: 2,
        batch_size: 0,
        bandwidth_limit: 7,
        prefetch_all: true,
        stream_prefetch: true,
      },
      filecache: { work_dir: '/c', encryption_key: 'k' },
      fscache: {},
    },
    rafs: {
      mode: 'cached',
      batch_size: 0x10000000,
      validate: true,
      enable_xattr: true,
      iostats_files: true,
      access_pattern: true,
      latest_read_files: true,
      prefetch: {},
    },
    overlay: { upper_dir: '/u', work_dir: '/w' },
  },
  {
    version: 2,
    backend: { type: 'oss', oss: { endpoint: 'e', bucket_name: 'b' } },
    cache: null,
    rafs: null,
    overlay: null,
  },
  {
    version: 2,
    backend: { type: 'localdisk', localdisk: { device_path: '/dev/x' } },
    cache: { type: 'fscache', fscache: { work_dir: '/f' } },
  },
];

test('fast: right configs read as zod reads them', () => {
  for (const [i, doc] of RIGHT.entries()) {
    const want = zodParse(doc);
    assert.notEqual(want, undefined, `config ${i} is right for zod`);
    const got = fastParseConfig(structuredClone(doc));
    assert.notEqual(got, undefined, `config ${i}: fast.ts reads it`);
    assert.equal(JSON.stringify(got), JSON.stringify(want), `config ${i}`);
  }
});

/** Every value in `doc` with its path, containers included. */
function paths(
  v: unknown,
  at: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  const entries: [string | number, unknown][] = Array.isArray(v)
    ? v.map((x, i) => [i, x])
    : typeof v === 'object' && v !== null
      ? Object.entries(v)
      : [];
  for (const [k, x] of entries) {
    out.push([...at, k]);
    paths(x, [...at, k], out);
  }
  return out;
}

const ODD: unknown[] = [
  null,
  undefined,
  '',
  'x',
  0,
  -1,
  1.5,
  256,
  2 ** 32,
  2 ** 53,
  Number.NaN,
  10n,
  true,
  [],
  ['x'],
  [1],
  {},
  { a: 1 },
  new Date(0),
  'blobcache',
  'direct',
  2,
];

test('fast: any mutation of a right config gives zod output or "not sure"', () => {
  const rnd = prng(12);
  let read = 0;
  for (let n = 0; n < 4000; n++) {
    const doc = structuredClone(RIGHT[Math.floor(rnd() * RIGHT.length)]) as Record<string, unknown>;
    const ps = paths(doc);
    for (let m = 1 + Math.floor(rnd() * 3); m > 0; m--) {
      const p = ps[Math.floor(rnd() * ps.length)];
      if (p === undefined) continue;
      let parent: unknown = doc;
      for (const k of p.slice(0, -1)) parent = (parent as Record<string | number, unknown>)?.[k];
      if (typeof parent !== 'object' || parent === null) continue;
      const last = p[p.length - 1] as string | number;
      const r = rnd();
      const obj = parent as Record<string | number, unknown>;
      if (r < 0.3 && !Array.isArray(parent)) delete obj[last];
      else if (r < 0.4 && !Array.isArray(parent)) obj['unknown_key'] = 1;
      else obj[last] = ODD[Math.floor(rnd() * ODD.length)];
    }
    const got = fastParseConfig(structuredClone(doc));
    if (got === undefined) continue;
    read++;
    assert.equal(JSON.stringify(got), JSON.stringify(zodParse(doc)), JSON.stringify(doc));
  }
  assert.ok(read > 100, `${read} mutated configs read by fast.ts`);
});
