import { unsupportedBackend, type BackendKind } from './kind.js';

/** `s3`: not written yet. */
export const s3Backend: BackendKind = unsupportedBackend('s3');
