import { NydusError } from '../../errors/errors.js';

/**
 * The text `nydusctl` prints for the API's answers, laid out as upstream's nydusctl prints them
 * (src/bin/nydusctl/commands.rs). Upstream prints JSON values with serde_json's Display, which
 * writes compact JSON with object keys in sorted order (strings keep their quotes), and floats
 * with Rust's Display (never an exponent, `NaN`, `inf`). These helpers reproduce both.
 */

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = Record<string, unknown>;

function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** A value with every object's keys in sorted (byte) order, as serde_json's default map keeps them. */
function sortedValue(v: unknown): Json {
  if (v === undefined || v === null) return null;
  if (Array.isArray(v)) return v.map(sortedValue);
  if (typeof v === 'object') {
    const out: { [k: string]: Json } = {};
    for (const k of Object.keys(v).sort(compareKeys)) out[k] = sortedValue((v as JsonObject)[k]);
    return out;
  }
  if (typeof v === 'number' && !Number.isFinite(v)) return null;
  return v as Json;
}

/** serde_json's Display of a value: compact JSON, keys sorted, a missing value is `null`. */
export function jsonDisplay(v: unknown): string {
  return JSON.stringify(sortedValue(v));
}

/** Rust's Display of an f64. */
export function rustFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (Object.is(x, -0)) return '-0';
  const s = String(x);
  const e = s.indexOf('e');
  if (e < 0) return s;
  const exp = Number(s.slice(e + 1));
  let mant = s.slice(0, e);
  const sign = mant.startsWith('-') ? '-' : '';
  if (sign !== '') mant = mant.slice(1);
  const dot = mant.indexOf('.');
  const digits = mant.replace('.', '');
  const point = (dot < 0 ? mant.length : dot) + exp;
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

function unexpected(what: string): NydusError {
  return new NydusError('ERR_FORMAT', `Unexpected answer from nydusd: ${what}`);
}

function asObject(v: unknown, what: string): JsonObject {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw unexpected(`${what} is not an object`);
  return v as JsonObject;
}

/** `m[key].as_f64().unwrap()`. */
function f64(m: JsonObject, key: string): number {
  const v = m[key];
  if (typeof v !== 'number') throw unexpected(`"${key}" is not a number`);
  return v;
}

function u64Of(v: unknown, what: string): bigint {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw unexpected(`${what} is not an unsigned integer`);
  return BigInt(v);
}

/** `m[key].as_u64().unwrap()`. */
function u64(m: JsonObject, key: string): bigint {
  return u64Of(m[key], `"${key}"`);
}

/** `a.checked_div(b).unwrap_or_default()` on u64. */
function div(a: bigint, b: bigint): bigint {
  return b === 0n ? 0n : a / b;
}

/** `m[key].as_array().unwrap()` of u64 values. */
function u64Array(m: JsonObject, key: string, len: number): bigint[] {
  const v = m[key];
  if (!Array.isArray(v)) throw unexpected(`"${key}" is not an array`);
  if (v.length < len) throw unexpected(`"${key}" has ${v.length} entries, expected ${len}`);
  return v.map((x, i) => u64Of(x, `"${key}"[${i}]`));
}

function arrayOf(m: JsonObject, key: string, len: number): unknown[] {
  const v = m[key];
  if (!Array.isArray(v)) throw unexpected(`"${key}" is not an array`);
  if (v.length < len) throw unexpected(`"${key}" has ${v.length} entries, expected ${len}`);
  return v;
}

/** Rust's `{:<w}`: left-aligned in a field of at least `w` characters. */
const pad = (v: string | bigint, w: number): string => String(v).padEnd(w);

const BLOCK_SIZES = ['<1K', '1K~', '4K~', '16K~', '64K~', '128K~', '512K~', '1M~'];
const READ_PERIODS = ['<1ms', '~20ms', '~50ms', '~100ms', '~500ms', '~1s', '~2s', '2s~'];

/** `nydusctl info` without --raw, from GET /api/v1/daemon. */
export function renderDaemonInfo(info: unknown): string {
  const i = asObject(info, 'the daemon information');
  const version = i['version'];
  const ver = typeof version === 'object' && version !== null ? (version as JsonObject) : {};
  let out =
    `\nVersion:                ${jsonDisplay(ver['package_ver'])}\n` +
    `Status:                 ${jsonDisplay(i['state'])}\n` +
    `Profile:                ${jsonDisplay(ver['profile'])}\n` +
    `Commit:                 ${jsonDisplay(ver['git_commit'])}\n`;
  const coll = i['backend_collection'];
  if (typeof coll !== 'object' || coll === null || Array.isArray(coll)) return out;
  const entries = Object.keys(coll).sort(compareKeys);
  if (entries.length > 0) out += 'Instances:\n';
  for (const mp of entries) {
    const b = asObject((coll as JsonObject)[mp], `backend_collection["${mp}"]`);
    const type = b['backend_type'];
    if (type !== 'Rafs' && type !== 'PassthroughFs')
      throw unexpected(`unknown backend_type ${jsonDisplay(type)}`);
    const time = b['mounted_time'];
    out += `\tInstance Mountpoint:  ${mp}\n`;
    out += `\tType:  ${type}\n`;
    out += `\tMounted Time:  ${typeof time === 'string' ? time : jsonDisplay(time)}\n`;
    if (type === 'Rafs') {
      const cfg = asObject(b['config'], `the config of "${mp}"`);
      const cache = cfg['cache'];
      if (typeof cache !== 'object' || cache === null)
        throw unexpected('no configuration information for cache');
      const rafs = cfg['rafs'];
      if (typeof rafs !== 'object' || rafs === null)
        throw unexpected('no configuration information for rafs');
      const prefetch = (cache as JsonObject)['prefetch'];
      const p = typeof prefetch === 'object' && prefetch !== null ? (prefetch as JsonObject) : {};
      const mode = (rafs as JsonObject)['mode'];
      out += `\tMode:  ${typeof mode === 'string' ? mode : 'direct'}\n`;
      out += `\tPrefetch:  ${p['enable'] === true ? 'true' : 'false'}\n`;
      const batch = p['batch_size'];
      out += `\tPrefetch Merging Size:  ${typeof batch === 'number' ? String(batch) : String(1024 * 1024)}\n`;
      out += '\n';
    }
  }
  return out;
}

/** `nydusctl metrics backend` without --raw, from GET /api/v1/metrics/backend. */
export function renderBackendMetrics(metrics: unknown): string {
  const m = asObject(metrics, 'the backend metrics');
  const latency = u64Array(m, 'read_cumulative_latency_millis_dist', BLOCK_SIZES.length);
  const hits = u64Array(m, 'read_count_block_size_dist', BLOCK_SIZES.length);
  let out =
    `\nBackend Type:       ${jsonDisplay(m['backend_type'])}\n` +
    `Read Amount:        ${jsonDisplay(m['read_amount_total'])} Bytes (${rustFloat(f64(m, 'read_amount_total') / 1024 / 1024)} MB)\n` +
    `Read Count:         ${jsonDisplay(m['read_count'])}\n` +
    `Read Errors:        ${jsonDisplay(m['read_errors'])}\n`;
  const header = `\n${pad('Block Sizes:', 25)}${BLOCK_SIZES.map((s) => pad(s, 8)).join('')}\n`;
  out += header;
  out += pad('Average Latency(millis):', 25);
  out += BLOCK_SIZES.map((_s, i) => pad(div(latency[i]!, hits[i]!), 8)).join('');
  out += '\n';
  out += header;
  out += pad('Request Count:', 25);
  out += BLOCK_SIZES.map((_s, i) => pad(hits[i]!, 8)).join('');
  out += '\n';
  return out;
}

function saturatingDelta(a: bigint, b: bigint): bigint {
  return b > a ? b - a : 0n;
}

/** One report of `nydusctl metrics backend -I SECS`: what changed between two samples. */
export function renderBackendDelta(last: unknown, current: unknown, intervalSecs: number): string {
  const o = asObject(last, 'the backend metrics');
  const n = asObject(current, 'the backend metrics');
  const delta = (key: string): bigint => saturatingDelta(u64(o, key), u64(n, key));
  const vecDelta = (key: string): bigint[] => {
    const a = u64Array(o, key, 0);
    const b = u64Array(n, key, 0);
    if (a.length !== b.length)
      throw unexpected(`"${key}" changed its length from ${a.length} to ${b.length}`);
    return b.map((x, i) => saturatingDelta(a[i]!, x));
  };
  const data = delta('read_amount_total');
  const requests = delta('read_count');
  const latency = delta('read_cumulative_latency_millis_total');
  const latencyDist = vecDelta('read_cumulative_latency_millis_dist');
  const hitsDist = vecDelta('read_count_block_size_dist');
  if (latencyDist.length < BLOCK_SIZES.length || hitsDist.length < BLOCK_SIZES.length)
    throw unexpected(`the block size distributions have fewer than ${BLOCK_SIZES.length} entries`);
  let out =
    '\n>>> >>> >>> >>> >>>\n' +
    `Backend Read Bandwidth:     ${div(data, BigInt(intervalSecs) * 1024n)} KB/S\n` +
    `Backend Average IO Size:    ${div(data, requests)} Bytes\n` +
    `Backend Average Latency:    ${div(latency, requests)} millis\n` +
    '\nBlock Sizes/millis:\n' +
    `${BLOCK_SIZES.map((s) => pad(s, 8)).join('')}\n`;
  out += BLOCK_SIZES.map((_s, i) => pad(div(latencyDist[i]!, hitsDist[i]!), 8)).join('');
  out += '\n<<< <<< <<< <<< <<<\n';
  return out;
}

/** `nydusctl metrics cache` without --raw, from GET /api/v1/metrics/blobcache. */
export function renderCacheMetrics(metrics: unknown): string {
  const m = asObject(metrics, 'the cache metrics');
  const duration =
    f64(m, 'prefetch_end_time_secs') +
    f64(m, 'prefetch_end_time_millis') / 1000 -
    (f64(m, 'prefetch_begin_time_secs') + f64(m, 'prefetch_begin_time_millis') / 1000);
  const amount = f64(m, 'prefetch_data_amount');
  const avgSize = div(u64(m, 'prefetch_data_amount'), u64(m, 'prefetch_requests_count'));
  const bandwidth = amount / 1024 / 1024 / duration;
  const latency = f64(m, 'prefetch_cumulative_time_millis') / f64(m, 'prefetch_requests_count') / 1000;
  return (
    `\nPartial Hits:               ${jsonDisplay(m['partial_hits'])}\n` +
    `Whole Hits:                 ${jsonDisplay(m['whole_hits'])}\n` +
    `Total Read:                 ${jsonDisplay(m['total'])}\n` +
    `Directory:                  ${jsonDisplay(m['store_path'])}\n` +
    `Files:                      ${jsonDisplay(m['underlying_files'])}\n` +
    `Persister Buffer:           ${jsonDisplay(m['buffered_backend_size'])}\n` +
    '\n' +
    `Prefetch Workers:           ${jsonDisplay(m['prefetch_workers'])}\n` +
    `Prefetch Amount:            ${rustFloat(amount)} = ${rustFloat(amount / 1024)} KB\n` +
    `Prefetch Requests:          ${jsonDisplay(m['prefetch_requests_count'])}\n` +
    `Prefetch Average Size:      ${avgSize} Bytes\n` +
    `Prefetch Duration:          ${rustFloat(duration)} Seconds\n` +
    `Prefetch Bandwidth:         ${rustFloat(bandwidth)} MB/S\n` +
    `Prefetch Request Latency:   ${rustFloat(latency)} Seconds\n` +
    `Prefetch Unmerged:          ${jsonDisplay(m['prefetch_unmerged_chunks'])}\n`
  );
}

/** `nydusctl metrics fsstats` without --raw, from GET /api/v1/metrics. */
export function renderFsStats(metrics: unknown): string {
  const m = asObject(metrics, 'the filesystem metrics');
  const hits = arrayOf(m, 'fop_hits', 15);
  const errors = arrayOf(m, 'fop_errors', 15);
  const dist = arrayOf(m, 'read_latency_dist', 0).map((x, i) => u64Of(x, `"read_latency_dist"[${i}]`));
  const dataRead = u64(m, 'data_read');
  const h = (i: number): string => jsonDisplay(hits[i]);
  let out = `\n${pad('Read Latency:', 16)}${READ_PERIODS.map((p) => pad(p, 8)).join('')}\n`;
  out += pad('Reads Count:', 16);
  out += dist.map((d) => pad(d, 8)).join('');
  out += '\n\n';
  out += `Read Errors: ${jsonDisplay(errors[4])}\n`;
  out += `Read Data: ${dataRead}Bytes (${dataRead / 1024n / 1024n}MB)\n`;
  out +=
    '\nFOP Counters:\n' +
    `Getattr(${h(0)}) Readlink(${h(1)}) Open(${h(2)}) Release(${h(3)}) Read(${h(4)}) Statfs(${h(5)}) Getxattr(${h(6)}) Listxattr(${h(7)})\n` +
    `Opendir(${h(8)}) Lookup(${h(9)}) Readdir(${h(10)}) Readdirplus(${h(11)}) Access(${h(12)}) Forget(${h(13)}) BatchForget(${h(14)})\n`;
  return out;
}
