/** The backend interfaces moved to the storage layer; kept here for existing importers. */
export type { BlobReader, BlobSource } from '../storage/blob-source.js';
