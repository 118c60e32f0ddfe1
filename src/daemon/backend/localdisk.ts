import { unsupportedBackend, type BackendKind } from './kind.js';

/** `localdisk`: not written yet. */
export const localDiskBackend: BackendKind = unsupportedBackend('localdisk');
