import { PassThrough, type Readable } from 'node:stream';
import { errorText, NydusError } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { ossSchema, s3Schema } from '../daemon/config/schema.js';
import { ossObjectStore } from '../storage/remote/oss.js';
import { s3ObjectStore, type ObjectStore } from '../storage/remote/s3.js';

/**
 * nydusify's object-store backends (`--backend-type oss|s3 --backend-config JSON`): the JSON is
 * the backend table nydusd reads too (`endpoint`, `scheme`, `bucket_name`, `region` (s3),
 * `object_prefix`, `access_key_id`, `access_key_secret`, and the network keys), so the same
 * text serves `convert` (push) and `check`/`mount` (read). Blob `<id>` is the object
 * `<object_prefix><id>`.
 */

export type ObjectStoreType = 'oss' | 's3';

export function isObjectStoreType(t: string): t is ObjectStoreType {
  return t === 'oss' || t === 's3';
}

/** Keys nydusify accepts in an object-store config but nydusd does not read. */
const NYDUSIFY_ONLY_KEYS = new Set(['meta_prefix']);

/**
 * The backend table of `type` from a `--backend-config` object: an `endpoint` written with a
 * scheme (`http://host:port`, as the OSS SDK accepts it) sets `scheme`; keys nydusd does not know
 * are dropped with a warning. Checks what upstream nydusify checks: oss needs `endpoint` and
 * `bucket_name`, s3 needs `bucket_name` and `region`.
 */
export function objectStoreTable(
  type: ObjectStoreType,
  config: Record<string, unknown>,
  log?: Logger,
): Record<string, unknown> {
  const schema = type === 's3' ? s3Schema : ossSchema;
  const known = new Set(Object.keys(schema.shape));
  const table: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (known.has(k)) table[k] = v;
    else if (!NYDUSIFY_ONLY_KEYS.has(k))
      log?.warn(`Unknown key "${k}" in the ${type} backend config, ignored`);
  }
  const ep = table['endpoint'];
  if (typeof ep === 'string') {
    const m = /^(https?):\/\/(.*?)\/?$/i.exec(ep);
    if (m !== null) {
      table['scheme'] ??= m[1]!.toLowerCase();
      table['endpoint'] = m[2];
    }
  }
  const parsed = schema.safeParse(table);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new NydusError(
      'ERR_INVALID_ARG',
      `Invalid ${type} backend config: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim(),
    );
  }
  const t = parsed.data;
  if (type === 'oss' && (t.endpoint === '' || t.bucket_name === ''))
    throw new NydusError('ERR_INVALID_ARG', "invalid OSS configuration: missing 'endpoint' or 'bucket_name'");
  if (type === 's3' && (t.bucket_name === '' || ('region' in t ? t.region : '') === ''))
    throw new NydusError('ERR_INVALID_ARG', "invalid S3 configuration: missing 'bucket_name' or 'region'");
  return table;
}

/** The object-store client of a `--backend-type oss|s3` config. */
export function openObjectStore(
  type: ObjectStoreType,
  config: Record<string, unknown>,
  log?: Logger,
): ObjectStore {
  const table = objectStoreTable(type, config, log);
  return type === 's3'
    ? s3ObjectStore(s3Schema.parse(table), log)
    : ossObjectStore(ossSchema.parse(table), log);
}

/** A stream of the object of `blobId`, readable at once (the GET starts now): a registry push body. */
export function objectStream(store: ObjectStore, blobId: string): Readable {
  const pass = new PassThrough();
  store.download(blobId).then(
    (s) => {
      s.on('error', (e: Error) => pass.destroy(e));
      s.pipe(pass);
    },
    (e: unknown) => pass.destroy(e instanceof Error ? e : new Error(errorText(e))),
  );
  return pass;
}

/**
 * The backend nydusd gets for `check`/`mount` from `--backend-type`/`--backend-config`: an oss or
 * s3 config normalized as `objectStoreTable` does (scheme split off the endpoint, nydusify-only
 * keys dropped), any other type unchanged.
 */
export function nydusdBackend(
  b: { type: string; config: Record<string, unknown> },
  log?: Logger,
): { type: string; config: Record<string, unknown> } {
  return isObjectStoreType(b.type) ? { type: b.type, config: objectStoreTable(b.type, b.config, log) } : b;
}
