import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NydusError } from '../errors/errors.js';

/**
 * The project's `proto` directory holding `relFile`: this module runs from dist/src/snapshotter
 * (three levels below the root), from src/snapshotter (two), or from another build directory
 * inside the project (the benchmarks' private build), so the directories above it are searched.
 */
export function protoDir(relFile: string): string {
  const here = dirname(fileURLToPath(import.meta.url));
  let dir = here;
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, relFile))) return candidate;
    dir = dirname(dir);
  }
  throw new NydusError('ERR_NOT_FOUND', `The proto file "${relFile}" is not found above "${here}"`);
}
