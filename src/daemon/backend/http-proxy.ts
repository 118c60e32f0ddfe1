import { stat } from 'node:fs/promises';
import { Connection } from '../../storage/remote/connection.js';
import { HttpBlobSource } from '../../storage/remote/http-blob.js';
import { headersFromEnv } from '../../storage/registry.js';
import type { HttpProxyConfig } from '../config/schema.js';
import { backendTable, invalid, type BackendKind } from './kind.js';

function isWebAddr(addr: string): boolean {
  return addr.startsWith('http://') || addr.startsWith('https://');
}

/**
 * The origin URL of a blob: `addr` + `path` + `/` + blob id (upstream joins `path` and the id as
 * a file path). Over a unix socket upstream asks for `/` whatever the blob (its quirk, kept).
 */
export function httpProxyBlobUrl(cfg: Pick<HttpProxyConfig, 'addr' | 'path'>, blobId: string): URL {
  if (!isWebAddr(cfg.addr)) return new URL('http://localhost/');
  const base = cfg.addr.replace(/\/+$/, '');
  const path = cfg.path.replace(/^\/*/, '/').replace(/\/+$/, '');
  return new URL(`${base}${path === '/' ? '' : path}/${blobId}`);
}

/**
 * `http-proxy`: blobs served by an HTTP server (`addr` an http(s) URL, blobs under `path`) or
 * by a local server on a unix socket (`addr` an absolute socket path). Size from HEAD, data
 * from ranged GETs; the backend's `proxy` or `mirrors` apply to an http(s) `addr`.
 */
export const httpProxyBackend: BackendKind = {
  async check(config) {
    const t = backendTable(config, 'http-proxy');
    if (t.addr === '') invalid('backend http-proxy needs "addr"');
    if (isWebAddr(t.addr)) {
      try {
        new URL(t.addr);
      } catch {
        invalid(`backend http-proxy "addr" ${JSON.stringify(t.addr)} is not a valid URL`);
      }
      return;
    }
    if (!t.addr.startsWith('/'))
      invalid(
        `backend http-proxy "addr" must be an http:// or https:// URL or an absolute unix socket path, got ${JSON.stringify(t.addr)}`,
      );
    const s = await stat(t.addr).catch(() => undefined);
    if (s === undefined) invalid(`backend http-proxy socket "${t.addr}" does not exist`);
    if (!s.isSocket()) invalid(`backend http-proxy "addr" "${t.addr}" is not a unix socket`);
  },
  create({ config, log, event }) {
    const t = backendTable(config, 'http-proxy');
    const socket = !isWebAddr(t.addr);
    const conn = new Connection(t, {
      log,
      headers: headersFromEnv(process.env),
      ...(event !== undefined ? { event } : {}),
      ...(socket ? { socketPath: t.addr } : {}),
    });
    const source = new HttpBlobSource({
      conn,
      kind: 'http-proxy',
      urlFor: (id) => httpProxyBlobUrl(t, id),
    });
    return {
      type: 'http-proxy',
      source,
      local: false,
      ...(socket ? {} : { setProxyUrl: (url: string) => conn.setProxyUrl(url) }),
      close: () => source.close(),
    };
  },
};
