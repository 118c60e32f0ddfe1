import { createHmac } from 'node:crypto';
import { isIP } from 'node:net';
import { NydusError } from '../../errors/errors.js';
import type { Logger } from '../../log/logger.js';
import type { OssConfig } from '../../daemon/config/schema.js';
import type { Connection } from './connection.js';
import { HttpBlobSource } from './http-blob.js';
import { hasCredentials, keyPath, ObjectStore, objectKey, type NetworkKeys } from './s3.js';

/**
 * The `oss` backend (Alibaba Cloud OSS): objects `<object_prefix><blob id>` of a bucket, requests
 * signed with OSS signature version 1:
 *
 *   Authorization: OSS <AccessKeyId>:base64(hmac-sha1(AccessKeySecret,
 *     VERB \n Content-MD5 \n Content-Type \n Date \n [CanonicalizedOSSHeaders \n] CanonicalizedResource))
 *
 * with CanonicalizedResource `/bucket/key`. URLs are virtual-hosted (`scheme://bucket.endpoint/key`,
 * as upstream) unless the endpoint is an IP address or `localhost`, where they are path-style
 * (`scheme://endpoint/bucket/key`), as a local OSS-compatible server needs.
 */

export type OssLocation = Pick<
  OssConfig,
  'scheme' | 'endpoint' | 'bucket_name' | 'object_prefix' | 'access_key_id' | 'access_key_secret'
>;

/** Whether requests to `endpoint` (`host[:port]`) are path-style: an IP address or localhost. */
export function ossPathStyle(endpoint: string): boolean {
  let host = endpoint;
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(endpoint);
  if (bracket !== null) host = bracket[1]!;
  else if (/^[^:]+:\d+$/.test(endpoint)) host = endpoint.slice(0, endpoint.lastIndexOf(':'));
  return isIP(host) !== 0 || host.toLowerCase() === 'localhost';
}

/** Origin URL of an object. */
export function ossObjectUrl(cfg: OssLocation, key: string): URL {
  const scheme = cfg.scheme === '' ? 'https' : cfg.scheme;
  if (ossPathStyle(cfg.endpoint))
    return new URL(`${scheme}://${cfg.endpoint}/${encodeURIComponent(cfg.bucket_name)}/${keyPath(key)}`);
  return new URL(`${scheme}://${cfg.bucket_name}.${cfg.endpoint}/${keyPath(key)}`);
}

/** CanonicalizedResource of an object: `/bucket/key`. */
export function ossResource(bucket: string, key: string): string {
  return `/${bucket}/${key}`;
}

function header(headers: Record<string, string>, name: string): string {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return '';
}

/** The string an OSS V1 signature signs (headers looked up case-insensitively). */
export function ossStringToSign(method: string, headers: Record<string, string>, resource: string): string {
  const oss = Object.entries(headers)
    .map(([k, v]) => [k.toLowerCase(), v.trim()] as const)
    .filter(([k]) => k.startsWith('x-oss-'))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([k, v]) => `${k}:${v}\n`)
    .join('');
  return `${method.toUpperCase()}\n${header(headers, 'content-md5')}\n${header(headers, 'content-type')}\n${header(headers, 'date')}\n${oss}${resource}`;
}

/** base64 HMAC-SHA1 of the string to sign. */
export function ossSignature(secret: string, stringToSign: string): string {
  return createHmac('sha1', secret).update(stringToSign, 'utf8').digest('base64');
}

/**
 * Sign a request in place: sets `date` (HTTP-date, now unless `date` is given, or the one
 * already in `headers` when `keepDate`) and `authorization`.
 */
export function signOss(
  method: string,
  headers: Record<string, string>,
  resource: string,
  cred: { accessKeyId: string; secret: string },
  opts: { date?: Date; keepDate?: boolean } = {},
): void {
  const hasDate = header(headers, 'date') !== '';
  if (!(opts.keepDate === true && hasDate)) {
    for (const k of Object.keys(headers)) if (k.toLowerCase() === 'date') delete headers[k];
    headers['date'] = (opts.date ?? new Date()).toUTCString();
  }
  for (const k of Object.keys(headers)) if (k.toLowerCase() === 'authorization') delete headers[k];
  const sig = ossSignature(cred.secret, ossStringToSign(method, headers, resource));
  headers['authorization'] = `OSS ${cred.accessKeyId}:${sig}`;
}

/** The resource of a request URL (path-style: its path; virtual-hosted: the bucket + its path). */
function resourceOfUrl(cfg: OssLocation, pathStyle: boolean, url: URL): string {
  const path = decodeURIComponent(url.pathname);
  return pathStyle ? path : `/${cfg.bucket_name}${path}`;
}

function checkOss(cfg: OssLocation): void {
  if (cfg.endpoint === '') throw new NydusError('ERR_INVALID_ARG', 'backend oss needs "endpoint"');
  if (cfg.bucket_name === '') throw new NydusError('ERR_INVALID_ARG', 'backend oss needs "bucket_name"');
}

/** The blob source of an `oss` backend table over `conn`: HEAD for sizes, signed ranged GETs for data. */
export function ossBlobSource(cfg: OssLocation, conn: Connection): HttpBlobSource {
  checkOss(cfg);
  const pathStyle = ossPathStyle(cfg.endpoint);
  const cred = { accessKeyId: cfg.access_key_id, secret: cfg.access_key_secret };
  return new HttpBlobSource({
    conn,
    kind: 'oss',
    urlFor: (blobId) => ossObjectUrl(cfg, objectKey(cfg, blobId)),
    ...(hasCredentials(cfg.access_key_id, cfg.access_key_secret)
      ? {
          sign: (method: string, url: URL, h: Record<string, string>) =>
            signOss(method, h, resourceOfUrl(cfg, pathStyle, url), cred),
        }
      : {}),
  });
}

/** The object-store client of an oss table (nydusify's `--backend-config`). */
export function ossObjectStore(cfg: OssLocation & Partial<NetworkKeys>, log?: Logger): ObjectStore {
  checkOss(cfg);
  const cred = { accessKeyId: cfg.access_key_id, secret: cfg.access_key_secret };
  return new ObjectStore(
    {
      kind: 'oss',
      where: `oss bucket "${cfg.bucket_name}"`,
      key: (blobId) => objectKey(cfg, blobId),
      url: (key) => ossObjectUrl(cfg, key),
      ...(hasCredentials(cfg.access_key_id, cfg.access_key_secret)
        ? {
            sign: (method: string, _url: URL, key: string, h: Record<string, string>) =>
              signOss(method, h, ossResource(cfg.bucket_name, key), cred),
          }
        : {}),
    },
    cfg,
    log,
  );
}
