import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { NydusError } from '../errors/errors.js';
import { protoDir } from './proto-dir.js';

/**
 * The Kubernetes CRI API (package `runtime.v1`, the subset in proto/cri/runtime/v1/api.proto):
 * the snapshotter's CRI image service proxy and the tests' CRI client load it from here.
 */

/** The proto file, relative to the project's `proto` directory. */
export const CRI_PROTO_FILE = 'cri/runtime/v1/api.proto';

/**
 * How messages appear in JavaScript: field names as in the proto (snake_case), enums as their
 * names, 64-bit integers as decimal strings (nanosecond times do not fit a double), bytes as
 * Buffers, absent scalars as their defaults.
 */
export const CRI_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

let cached: grpc.GrpcObject | undefined;

/**
 * The loaded CRI package: `loadCriProto().runtime.v1.RuntimeService` and `.ImageService` are
 * client constructors; their `.service` definitions serve a server. Loaded once per process.
 */
export function loadCriProto(): grpc.GrpcObject {
  if (cached === undefined) {
    const def = protoLoader.loadSync(CRI_PROTO_FILE, {
      ...CRI_LOADER_OPTIONS,
      includeDirs: [protoDir(CRI_PROTO_FILE)],
    });
    cached = grpc.loadPackageDefinition(def);
  }
  return cached;
}

/** The `runtime.v1` namespace of the loaded package (services and message types). */
export function criPackage(): grpc.GrpcObject {
  const runtime = loadCriProto()['runtime'] as grpc.GrpcObject | undefined;
  const v1 = runtime?.['v1'] as grpc.GrpcObject | undefined;
  if (v1 === undefined) throw new NydusError('ERR_FORMAT', 'The CRI proto file has no package "runtime.v1"');
  return v1;
}
