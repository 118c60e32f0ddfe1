import type { BlobSource } from '../../storage/blob-source.js';
import { Connection, type ConnectionConfig } from '../../storage/remote/connection.js';
import type { Backend, BackendContext } from './kind.js';

/**
 * An object-store backend (s3, oss): its own connection to the endpoint (proxy, mirrors,
 * retries, failed requests to the events ring) under `source`, whose proxy URL the config API
 * switches hot.
 */
export function objectStoreBackend(
  type: string,
  net: ConnectionConfig,
  ctx: BackendContext,
  source: (conn: Connection) => BlobSource & { close(): Promise<void> },
): Backend {
  const conn = new Connection(net, {
    log: ctx.log,
    ...(ctx.event !== undefined ? { event: ctx.event } : {}),
  });
  const src = source(conn);
  return {
    type,
    source: src,
    local: false,
    setProxyUrl: (url) => conn.setProxyUrl(url),
    close: () => src.close(),
  };
}
