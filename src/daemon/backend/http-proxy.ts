import { unsupportedBackend, type BackendKind } from './kind.js';

/** `http-proxy`: not written yet. */
export const httpProxyBackend: BackendKind = unsupportedBackend('http-proxy');
