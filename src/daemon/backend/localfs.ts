import { LocalFsBlobSource } from '../../storage/localfs.js';
import { invalid, isKind, type BackendKind } from './kind.js';
import { inlineBlobFiles, localfsOptions } from '../local-blobs.js';

/** `localfs`: blobs are files in `dir` (or the one `blob_file`), with `alt_dirs` searched too. */
export const localFsBackend: BackendKind = {
  async check(config) {
    const { blobFile, dir } = localfsOptions(config, 'nydusd');
    if (blobFile === undefined && dir === undefined) invalid('backend localfs needs "dir" or "blob_file"');
    if (blobFile !== undefined && !(await isKind(blobFile, 'file')))
      invalid(`Blob file "${blobFile}" does not exist`);
    if (blobFile === undefined && dir !== undefined && !(await isKind(dir, 'dir')))
      invalid(`Blob directory "${dir}" does not exist or is not a directory`);
  },
  create({ config, loaded }) {
    return {
      type: 'localfs',
      source: new LocalFsBlobSource({ ...localfsOptions(config, 'nydusd'), files: inlineBlobFiles(loaded) }),
      local: true,
      close: () => Promise.resolve(),
    };
  },
};
