import { ossBlobSource } from '../../storage/remote/oss.js';
import { connectionConfig } from '../../storage/remote/s3.js';
import { backendTable, invalid, type BackendKind } from './kind.js';
import { objectStoreBackend } from './object-store.js';

/** `oss`: blobs are the objects `<object_prefix><blob id>` of `bucket_name`, read with signed ranged GETs. */
export const ossBackend: BackendKind = {
  check(config) {
    const t = backendTable(config, 'oss');
    if (t.endpoint === '') invalid('backend oss needs "endpoint"');
    if (t.bucket_name === '') invalid('backend oss needs "bucket_name"');
    return Promise.resolve();
  },
  create(ctx) {
    const t = backendTable(ctx.config, 'oss');
    return objectStoreBackend('oss', connectionConfig(t), ctx, (conn) => ossBlobSource(t, conn));
  },
};
