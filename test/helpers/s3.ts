import { createHash, createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

/**
 * An S3 server for tests: s3rver (a real S3 implementation on the file system) on 127.0.0.1,
 * behind a small verifying front (node:http) that checks every request's signature with the
 * known secret before passing it on. The front speaks both AWS SigV4 (`AWS4-HMAC-SHA256 ...`)
 * and OSS signature V1 (`OSS id:sig`), recomputed here independently of the code under test;
 * a mismatch is answered like the real services: 403 with an XML `SignatureDoesNotMatch`.
 * Requests without an Authorization header are refused (403 AccessDenied) unless
 * `allowAnonymous`. What passes goes to s3rver without its Authorization header (s3rver itself
 * only knows its own dummy account).
 */

export interface FrontRequest {
  method: string;
  path: string;
  auth: 's3' | 'oss' | 'anonymous';
  status: number;
}

export interface TestS3 {
  /** `127.0.0.1:PORT` of the verifying front: the `endpoint` of a backend config. */
  endpoint: string;
  url: string;
  bucket: string;
  accessKeyId: string;
  secret: string;
  region: string;
  /** Where s3rver keeps the objects. */
  dir: string;
  /** Every request the front answered. */
  requests: FrontRequest[];
  /** Requests refused for a bad signature or a missing one. */
  rejected(): FrontRequest[];
  /** Let unsigned requests through (settable). */
  allowAnonymous: boolean;
  stop(): Promise<void>;
}

export interface StartS3Options {
  bucket?: string;
  accessKeyId?: string;
  secret?: string;
  region?: string;
  allowAnonymous?: boolean;
}

function xmlError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const rfc3986 = (s: string): string =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function headerValue(req: IncomingMessage, name: string): string {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : (v ?? '');
}

/** SigV4 check (S3 flavour: path segments not double-encoded). Returns a failure reason or undefined. */
function verifySigV4(
  req: IncomingMessage,
  auth: string,
  id: string,
  secret: string,
  region: string,
): { code: string; message: string } | undefined {
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$/.exec(
      auth,
    );
  if (m === null)
    return { code: 'AuthorizationHeaderMalformed', message: 'The authorization header is malformed' };
  const [, akid, day, reg, signedList, signature] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (akid !== id)
    return { code: 'InvalidAccessKeyId', message: 'The AWS Access Key Id you provided does not exist' };
  if (reg !== region) return { code: 'AuthorizationHeaderMalformed', message: `Wrong region "${reg}"` };
  const amzDate = headerValue(req, 'x-amz-date');
  if (!amzDate.startsWith(day))
    return { code: 'AccessDenied', message: 'x-amz-date does not match the scope date' };
  const payload = headerValue(req, 'x-amz-content-sha256');
  if (payload === '') return { code: 'InvalidRequest', message: 'Missing x-amz-content-sha256' };
  const signed = signedList.split(';');
  if (!signed.includes('host')) return { code: 'AccessDenied', message: 'host is not signed' };
  const u = new URL(req.url ?? '/', 'http://front');
  const path = u.pathname
    .split('/')
    .map((s) => rfc3986(decodeURIComponent(s)))
    .join('/');
  const query = [...u.searchParams.entries()]
    .map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`)
    .sort()
    .join('&');
  const headers = signed.map((h) => `${h}:${headerValue(req, h).trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonical = [req.method, path, query, headers, signedList, payload].join('\n');
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    scope,
    createHash('sha256').update(canonical).digest('hex'),
  ].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${secret}`).update(day).digest();
  for (const part of [region, 's3', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  const expected = createHmac('sha256', key).update(toSign).digest('hex');
  if (expected !== signature)
    return {
      code: 'SignatureDoesNotMatch',
      message: 'The request signature we calculated does not match the signature you provided',
    };
  return undefined;
}

/** OSS V1 check; the resource is the request path (path-style requests). */
function verifyOss(
  req: IncomingMessage,
  auth: string,
  id: string,
  secret: string,
): { code: string; message: string } | undefined {
  const m = /^OSS ([^:]+):(.+)$/.exec(auth);
  if (m === null) return { code: 'InvalidArgument', message: 'Authorization header is invalid' };
  if (m[1] !== id)
    return { code: 'InvalidAccessKeyId', message: 'The OSS Access Key Id you provided does not exist' };
  const date = headerValue(req, 'date');
  if (date === '') return { code: 'AccessDenied', message: 'Missing Date header' };
  const ossHeaders = Object.keys(req.headers)
    .filter((k) => k.startsWith('x-oss-'))
    .sort()
    .map((k) => `${k}:${headerValue(req, k).trim()}\n`)
    .join('');
  const resource = decodeURIComponent(new URL(req.url ?? '/', 'http://front').pathname);
  const toSign = `${req.method ?? ''}\n${headerValue(req, 'content-md5')}\n${headerValue(req, 'content-type')}\n${date}\n${ossHeaders}${resource}`;
  const expected = createHmac('sha1', secret).update(toSign).digest('base64');
  if (expected !== m[2])
    return {
      code: 'SignatureDoesNotMatch',
      message: 'The request signature we calculated does not match the signature you provided',
    };
  return undefined;
}

/** Start s3rver with one bucket behind the verifying front. */
export async function startS3(o: StartS3Options = {}): Promise<TestS3> {
  const dir = mkdtempSync(join(tmpdir(), 'nydus-s3-'));
  const bucket = o.bucket ?? 'nydus';
  const s3rver = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: dir,
    configureBuckets: [{ name: bucket }],
  });
  let backendPort: number;
  try {
    const addr = await s3rver.run();
    backendPort = addr.port;
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const requests: FrontRequest[] = [];
  const state = {
    accessKeyId: o.accessKeyId ?? 'AKIDNYDUSTEST',
    secret: o.secret ?? 'nydus-test-secret/0123456789',
    region: o.region ?? 'us-east-1',
    allowAnonymous: o.allowAnonymous ?? false,
  };
  const server: Server = createServer((req, res) => {
    const auth = headerValue(req, 'authorization');
    const kind: FrontRequest['auth'] = auth.startsWith('AWS4-')
      ? 's3'
      : auth.startsWith('OSS ')
        ? 'oss'
        : 'anonymous';
    const record = (status: number): void => {
      requests.push({ method: req.method ?? '', path: req.url ?? '', auth: kind, status });
    };
    let failure: { code: string; message: string } | undefined;
    if (kind === 's3') failure = verifySigV4(req, auth, state.accessKeyId, state.secret, state.region);
    else if (kind === 'oss') failure = verifyOss(req, auth, state.accessKeyId, state.secret);
    else if (!state.allowAnonymous)
      failure = { code: 'AccessDenied', message: 'Anonymous access is forbidden' };
    if (failure !== undefined) {
      req.resume();
      record(403);
      xmlError(res, 403, failure.code, failure.message);
      return;
    }
    const headers: Record<string, string | string[] | undefined> = {
      ...req.headers,
      host: `127.0.0.1:${backendPort}`,
    };
    delete headers['authorization'];
    // s3rver wants this on a PUT; the signature (if any) is already checked.
    if (req.method === 'PUT' && headers['x-amz-content-sha256'] === undefined)
      headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
    const up = httpRequest(
      { host: '127.0.0.1', port: backendPort, method: req.method, path: req.url, headers },
      (r) => {
        record(r.statusCode ?? 0);
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', (e) => {
      record(502);
      if (!res.headersSent) xmlError(res, 502, 'BadGateway', e.message);
      else res.destroy();
    });
    req.pipe(up);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    bucket,
    get accessKeyId() {
      return state.accessKeyId;
    },
    get secret() {
      return state.secret;
    },
    get region() {
      return state.region;
    },
    dir,
    requests,
    rejected: () => requests.filter((r) => r.status === 403),
    get allowAnonymous() {
      return state.allowAnonymous;
    },
    set allowAnonymous(v: boolean) {
      state.allowAnonymous = v;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((res) => server.close(() => res()));
      await s3rver.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An s3 backend table for nydusd / nydusify pointing at `s`. */
export function s3Table(s: TestS3, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    scheme: 'http',
    endpoint: s.endpoint,
    region: s.region,
    bucket_name: s.bucket,
    object_prefix: 'blobs/',
    access_key_id: s.accessKeyId,
    access_key_secret: s.secret,
    timeout: 5,
    connect_timeout: 5,
    ...over,
  };
}

/** An oss backend table for nydusd / nydusify pointing at `s` (path-style: the endpoint is an IP). */
export function ossTable(s: TestS3, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    scheme: 'http',
    endpoint: s.endpoint,
    bucket_name: s.bucket,
    object_prefix: 'oss/',
    access_key_id: s.accessKeyId,
    access_key_secret: s.secret,
    timeout: 5,
    connect_timeout: 5,
    ...over,
  };
}
