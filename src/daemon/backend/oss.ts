import { Connection } from '../../storage/remote/connection.js';
import { ossBlobSource } from '../../storage/remote/oss.js';
import { connectionConfig } from '../../storage/remote/s3.js';
import { backendTable, invalid, type BackendKind } from './kind.js';

/** `oss`: blobs are the objects `<object_prefix><blob id>` of `bucket_name`, read with signed ranged GETs. */
export const ossBackend: BackendKind = {
  check(config) {
    const t = backendTable(config, 'oss');
    if (t.endpoint === '') invalid('backend oss needs "endpoint"');
    if (t.bucket_name === '') invalid('backend oss needs "bucket_name"');
    return Promise.resolve();
  },
  create({ config, log, event }) {
    const t = backendTable(config, 'oss');
    const conn = new Connection(connectionConfig(t), { log, ...(event !== undefined ? { event } : {}) });
    const src = ossBlobSource(t, conn);
    return {
      type: 'oss',
      source: src,
      local: false,
      setProxyUrl: (url) => conn.setProxyUrl(url),
      close: () => src.close(),
    };
  },
};
