import { Connection } from '../../storage/remote/connection.js';
import { connectionConfig, s3BlobSource } from '../../storage/remote/s3.js';
import { backendTable, invalid, type BackendKind } from './kind.js';

/** `s3`: blobs are the objects `<object_prefix><blob id>` of `bucket_name`, read with signed ranged GETs. */
export const s3Backend: BackendKind = {
  check(config) {
    const t = backendTable(config, 's3');
    if (t.bucket_name === '') invalid('backend s3 needs "bucket_name"');
    if (t.region === '') invalid('backend s3 needs "region"');
    return Promise.resolve();
  },
  create({ config, log, event }) {
    const t = backendTable(config, 's3');
    const conn = new Connection(connectionConfig(t), { log, ...(event !== undefined ? { event } : {}) });
    const src = s3BlobSource(t, conn);
    return {
      type: 's3',
      source: src,
      local: false,
      setProxyUrl: (url) => conn.setProxyUrl(url),
      close: () => src.close(),
    };
  },
};
