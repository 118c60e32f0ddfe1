import * as grpc from '@grpc/grpc-js';
import { errorText } from '../errors/errors.js';
import type { Logger } from '../log/logger.js';
import { parseReference } from '../oci/reference.js';
import { criPackage } from './cri-proto.js';
import type { Keychain } from './keychain.js';

/**
 * The CRI keychain (upstream-surface §7.9): the snapshotter serves the CRI ImageService on its
 * own socket and forwards every call to containerd's (`image_service_address`), so kubelet, with
 * `image-endpoint` pointed here, pulls as before while the snapshotter sees the credentials of
 * each PullImage and gives them to the nydusd that lazily reads that image. Messages pass
 * through as raw bytes, so fields this proto does not declare are never lost; only PullImage is
 * decoded (a copy) for its image and auth.
 */

interface PullImageRequest {
  image?: { image?: string };
  auth?: { username?: string; password?: string; auth?: string; registry_token?: string } | null;
}

const raw = (b: Buffer): Buffer => b;

export function addCriImageProxy(
  server: grpc.Server,
  upstream: string,
  keychain: Keychain,
  log: Logger,
): grpc.Client {
  const ImageService = criPackage()['ImageService'] as grpc.ServiceClientConstructor;
  const target = upstream.startsWith('unix:') ? upstream : `unix:${upstream}`;
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const pullType = ImageService.service['PullImage']!;
  const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, m] of Object.entries(ImageService.service)) {
    if (m.requestStream || m.responseStream) continue;
    def[name] = {
      path: m.path,
      requestStream: false,
      responseStream: false,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    };
    impl[name] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      if (name === 'PullImage') {
        try {
          const req = pullType.requestDeserialize(call.request) as PullImageRequest;
          const image = req.image?.image ?? '';
          const a = req.auth ?? undefined;
          if (image !== '' && a !== undefined) {
            keychain.recordCri(parseReference(image), {
              ...(a.username ? { username: a.username } : {}),
              ...(a.password ? { password: a.password } : {}),
              ...(a.auth ? { auth: a.auth } : {}),
              ...(a.registry_token ? { registryToken: a.registry_token } : {}),
            });
            log.debug(`CRI PullImage of ${image}: credentials recorded`);
          }
        } catch (e) {
          log.warn(`CRI PullImage: cannot read the request for credentials: ${errorText(e)}`);
        }
      }
      client.makeUnaryRequest(m.path, raw, raw, call.request, call.metadata, (err, res) => {
        if (err !== null) cb(err);
        else cb(null, res);
      });
    };
  }
  server.addService(def, impl);
  log.info(`CRI image service proxy to ${upstream}`);
  return client;
}
