import { connectionConfig, s3BlobSource } from '../../storage/remote/s3.js';
import { backendTable, invalid, type BackendKind } from './kind.js';
import { objectStoreBackend } from './object-store.js';

/** `s3`: blobs are the objects `<object_prefix><blob id>` of `bucket_name`, read with signed ranged GETs. */
export const s3Backend: BackendKind = {
  check(config) {
    const t = backendTable(config, 's3');
    if (t.bucket_name === '') invalid('backend s3 needs "bucket_name"');
    if (t.region === '') invalid('backend s3 needs "region"');
    return Promise.resolve();
  },
  create(ctx) {
    const t = backendTable(ctx.config, 's3');
    return objectStoreBackend('s3', connectionConfig(t), ctx, (conn) => s3BlobSource(t, conn));
  },
};
