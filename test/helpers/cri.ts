import * as grpc from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import { criPackage } from '../../src/snapshotter/cri-proto.js';

/**
 * A small Kubernetes CRI client (runtime.v1) over grpc-js for tests: what kubelet (or crictl)
 * would send to containerd's CRI plugin, or to the snapshotter's CRI image-service proxy. It
 * uses the project's own proto (proto/cri/runtime/v1/api.proto, loaded by src/snapshotter/
 * cri-proto.ts); messages are plain objects with the proto's snake_case field names, enums as
 * names and 64-bit integers as decimal strings.
 */

/** A CRI call that failed: the gRPC status code (grpc.status) and the server's message. */
export class CriError extends Error {
  readonly code: number;
  readonly details: string;
  readonly method: string;

  constructor(method: string, code: number, details: string) {
    super(`CRI ${method} failed: ${grpc.status[code] ?? code}: ${details}`);
    this.name = 'CriError';
    this.method = method;
    this.code = code;
    this.details = details;
  }
}

export type ContainerState =
  'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface ImageSpec {
  image: string;
  annotations?: Record<string, string>;
}

export interface CriImage {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  /** Bytes, as a decimal string. */
  size: string;
  username: string;
  spec: ImageSpec | null;
  pinned: boolean;
}

export interface CriMount {
  container_path: string;
  host_path: string;
  readonly: boolean;
}

export interface CriContainerStatus {
  id: string;
  metadata: { name: string; attempt: number } | null;
  state: ContainerState;
  /** Nanoseconds since the epoch, as decimal strings; "0" when not yet. */
  created_at: string;
  started_at: string;
  finished_at: string;
  exit_code: number;
  image: ImageSpec | null;
  image_ref: string;
  reason: string;
  message: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  mounts: CriMount[];
  log_path: string;
}

export interface CriContainer {
  id: string;
  pod_sandbox_id: string;
  metadata: { name: string; attempt: number } | null;
  image: ImageSpec | null;
  image_ref: string;
  state: ContainerState;
  created_at: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface CriPodSandboxStatus {
  id: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number } | null;
  state: PodSandboxState;
  created_at: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtime_handler: string;
}

export interface CriPodSandbox {
  id: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number } | null;
  state: PodSandboxState;
  created_at: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface CriVersion {
  version: string;
  runtime_name: string;
  runtime_version: string;
  runtime_api_version: string;
}

/** AuthConfig: username/password, or `auth` (base64 of "user:password"), or a registry token. */
export interface CriAuth {
  username?: string;
  password?: string;
  auth?: string;
  server_address?: string;
  identity_token?: string;
  registry_token?: string;
}

/** A message as the proto declares it (snake_case fields); see podConfig and containerConfig. */
export type CriMessage = Record<string, unknown>;

export interface CriClient {
  version(timeoutMs?: number): Promise<CriVersion>;
  /** PullImage; resolves to the image ref (its id, `sha256:...`). */
  pullImage(image: string, auth?: CriAuth, sandboxConfig?: CriMessage, timeoutMs?: number): Promise<string>;
  /** ImageStatus; null when the runtime does not have the image. */
  imageStatus(image: string, timeoutMs?: number): Promise<CriImage | null>;
  listImages(timeoutMs?: number): Promise<CriImage[]>;
  removeImage(image: string, timeoutMs?: number): Promise<void>;
  imageFsInfo(timeoutMs?: number): Promise<CriMessage>;
  runPodSandbox(config: CriMessage, runtimeHandler?: string, timeoutMs?: number): Promise<string>;
  podSandboxStatus(id: string, timeoutMs?: number): Promise<CriPodSandboxStatus>;
  listPodSandbox(timeoutMs?: number): Promise<CriPodSandbox[]>;
  stopPodSandbox(id: string, timeoutMs?: number): Promise<void>;
  removePodSandbox(id: string, timeoutMs?: number): Promise<void>;
  createContainer(
    podId: string,
    config: CriMessage,
    sandboxConfig: CriMessage,
    timeoutMs?: number,
  ): Promise<string>;
  startContainer(id: string, timeoutMs?: number): Promise<void>;
  /** StopContainer: SIGTERM, then SIGKILL after `graceSeconds` (default 0: at once). */
  stopContainer(id: string, graceSeconds?: number, timeoutMs?: number): Promise<void>;
  removeContainer(id: string, timeoutMs?: number): Promise<void>;
  containerStatus(id: string, timeoutMs?: number): Promise<CriContainerStatus>;
  listContainers(filter?: CriMessage, timeoutMs?: number): Promise<CriContainer[]>;
  /** ExecSync: run a command in a running container. */
  execSync(
    id: string,
    cmd: string[],
    timeoutMs?: number,
  ): Promise<{ stdout: string; stderr: string; exitCode: number }>;
  /** Poll ContainerStatus until the container has exited (bounded); returns that status. */
  waitExited(id: string, timeoutMs?: number): Promise<CriContainerStatus>;
  close(): void;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const PULL_TIMEOUT_MS = 180_000;

type Callback = (err: grpc.ServiceError | null, res?: unknown) => void;
type UnaryMethod = (req: unknown, options: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

function unary<T>(client: grpc.Client, method: string, req: unknown, timeoutMs: number): Promise<T> {
  const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
  if (fn === undefined) return Promise.reject(new Error(`the CRI proto has no method ${method}`));
  return new Promise<T>((resolve, reject) => {
    fn.call(client, req, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err !== null) reject(new CriError(method, err.code, err.details));
      else resolve(res as T);
    });
  });
}

/** A client of the CRI API on the unix socket `sock` (containerd's own, or a proxy's). */
export function criClient(sock: string): CriClient {
  const pkg = criPackage();
  const Runtime = pkg['RuntimeService'] as grpc.ServiceClientConstructor;
  const Images = pkg['ImageService'] as grpc.ServiceClientConstructor;
  const target = `unix://${sock}`;
  const creds = grpc.credentials.createInsecure();
  const rt = new Runtime(target, creds);
  const im = new Images(target, creds);
  const r = <T>(method: string, req: unknown, ms = DEFAULT_TIMEOUT_MS): Promise<T> =>
    unary<T>(rt, method, req, ms);
  const i = <T>(method: string, req: unknown, ms = DEFAULT_TIMEOUT_MS): Promise<T> =>
    unary<T>(im, method, req, ms);

  const client: CriClient = {
    version: (ms) => r<CriVersion>('Version', { version: 'v1' }, ms),
    pullImage: async (image, auth, sandboxConfig, ms = PULL_TIMEOUT_MS) => {
      const req: CriMessage = { image: { image } };
      if (auth !== undefined) req['auth'] = auth;
      if (sandboxConfig !== undefined) req['sandbox_config'] = sandboxConfig;
      return (await i<{ image_ref: string }>('PullImage', req, ms)).image_ref;
    },
    imageStatus: async (image, ms) =>
      (await i<{ image: CriImage | null }>('ImageStatus', { image: { image } }, ms)).image,
    listImages: async (ms) => (await i<{ images: CriImage[] }>('ListImages', {}, ms)).images,
    removeImage: async (image, ms) => {
      await i('RemoveImage', { image: { image } }, ms);
    },
    imageFsInfo: (ms) => i<CriMessage>('ImageFsInfo', {}, ms),
    runPodSandbox: async (config, runtimeHandler = '', ms = PULL_TIMEOUT_MS) =>
      (await r<{ pod_sandbox_id: string }>('RunPodSandbox', { config, runtime_handler: runtimeHandler }, ms))
        .pod_sandbox_id,
    podSandboxStatus: async (id, ms) =>
      (await r<{ status: CriPodSandboxStatus }>('PodSandboxStatus', { pod_sandbox_id: id }, ms)).status,
    listPodSandbox: async (ms) => (await r<{ items: CriPodSandbox[] }>('ListPodSandbox', {}, ms)).items,
    stopPodSandbox: async (id, ms) => {
      await r('StopPodSandbox', { pod_sandbox_id: id }, ms);
    },
    removePodSandbox: async (id, ms) => {
      await r('RemovePodSandbox', { pod_sandbox_id: id }, ms);
    },
    createContainer: async (podId, config, sandboxConfig, ms) =>
      (
        await r<{ container_id: string }>(
          'CreateContainer',
          { pod_sandbox_id: podId, config, sandbox_config: sandboxConfig },
          ms,
        )
      ).container_id,
    startContainer: async (id, ms) => {
      await r('StartContainer', { container_id: id }, ms);
    },
    stopContainer: async (id, graceSeconds = 0, ms) => {
      await r('StopContainer', { container_id: id, timeout: graceSeconds }, ms);
    },
    removeContainer: async (id, ms) => {
      await r('RemoveContainer', { container_id: id }, ms);
    },
    containerStatus: async (id, ms) =>
      (await r<{ status: CriContainerStatus }>('ContainerStatus', { container_id: id }, ms)).status,
    listContainers: async (filter, ms) =>
      (await r<{ containers: CriContainer[] }>('ListContainers', filter === undefined ? {} : { filter }, ms))
        .containers,
    execSync: async (id, cmd, ms = DEFAULT_TIMEOUT_MS) => {
      const res = await r<{ stdout: Buffer; stderr: Buffer; exit_code: number }>(
        'ExecSync',
        { container_id: id, cmd, timeout: Math.ceil(ms / 1000) },
        ms + 5000,
      );
      return {
        stdout: res.stdout.toString('utf8'),
        stderr: res.stderr.toString('utf8'),
        exitCode: res.exit_code,
      };
    },
    waitExited: async (id, ms = DEFAULT_TIMEOUT_MS) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const s = await client.containerStatus(id);
        if (s.state === 'CONTAINER_EXITED') return s;
        if (Date.now() > deadline)
          throw new Error(`container ${id} did not exit within ${ms} ms (state ${s.state})`);
        await sleep(100);
      }
    },
    close: () => {
      rt.close();
      im.close();
    },
  };
  return client;
}

/**
 * A PodSandboxConfig for a pod on the host network (no CNI needed), its container logs under
 * `logDirectory`.
 */
export function podConfig(opts: {
  name: string;
  logDirectory: string;
  uid?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}): CriMessage {
  return {
    metadata: {
      name: opts.name,
      uid: opts.uid ?? `uid-${opts.name}`,
      namespace: opts.namespace ?? 'default',
      attempt: 0,
    },
    hostname: '',
    log_directory: opts.logDirectory,
    labels: opts.labels ?? {},
    annotations: opts.annotations ?? {},
    linux: {
      security_context: {
        namespace_options: { network: 'NODE', pid: 'POD', ipc: 'POD' },
      },
    },
  };
}

/** A ContainerConfig: `command` (entrypoint) and `args`, logging to `logPath` (relative to the pod's log dir). */
export function containerConfig(opts: {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  logPath?: string;
  env?: Record<string, string>;
  labels?: Record<string, string>;
}): CriMessage {
  return {
    metadata: { name: opts.name, attempt: 0 },
    image: { image: opts.image },
    command: opts.command ?? [],
    args: opts.args ?? [],
    envs: Object.entries(opts.env ?? {}).map(([key, value]) => ({ key, value })),
    labels: opts.labels ?? {},
    log_path: opts.logPath ?? `${opts.name}.log`,
    linux: {},
  };
}

/** One line of a CRI container log: `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`. */
export interface CriLogLine {
  time: string;
  stream: 'stdout' | 'stderr';
  /** F: a full line; P: part of a longer line. */
  tag: 'F' | 'P';
  text: string;
}

/** Parse a CRI log file's text; throws on a line not in the CRI format. */
export function parseCriLog(text: string): CriLogLine[] {
  const out: CriLogLine[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const m = /^(\S+) (stdout|stderr) (F|P) (.*)$/.exec(line);
    if (m === null) throw new Error(`not a CRI log line: ${JSON.stringify(line)}`);
    out.push({ time: m[1]!, stream: m[2] as 'stdout' | 'stderr', tag: m[3] as 'F' | 'P', text: m[4]! });
  }
  return out;
}
