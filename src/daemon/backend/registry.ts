import { RegistryBlobSource } from '../../storage/registry.js';
import { backendTable, type BackendKind } from './kind.js';

/** `registry`: a blob is the layer `sha256:<blob id>` of `repo` on `host`. */
export const registryBackend: BackendKind = {
  check(config) {
    backendTable(config, 'registry');
    return Promise.resolve();
  },
  create({ config, log, event }) {
    const src = new RegistryBlobSource(backendTable(config, 'registry'), { log, event });
    return {
      type: 'registry',
      source: src,
      local: false,
      setAuth: (auth) => src.setAuth(auth),
      setProxyUrl: (url) => src.setProxyUrl(url),
      close: () => src.close(),
    };
  },
};
