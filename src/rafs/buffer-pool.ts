/** The chunk buffer pool moved to the storage layer; kept here for existing importers. */
export { BufferPool } from '../storage/buffer-pool.js';
