import { unsupportedBackend, type BackendKind } from './kind.js';

/** `oss`: not written yet. */
export const ossBackend: BackendKind = unsupportedBackend('oss');
