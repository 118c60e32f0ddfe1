import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { describeValue, formatKeyPath, isPlainObject } from '../daemon/config/key-path.js';
import { errorText, NydusError } from '../errors/errors.js';

/**
 * The configuration of `containerd-nydus-grpc`: upstream nydus-snapshotter's TOML file
 * (`--config`, `version = 1` required), its command-line flags (they override the file) and its
 * defaults (upstream-surface §7.2, §7.3), as one checked `SnapshotterConfig`.
 *
 * Merge rule, as upstream: file, then flags on top, then defaults fill what is still unset or
 * zero (an empty string, a 0 number or duration: `recover_policy = ""` means restart,
 * `log_rotation_max_size = 0` means 200). Paths derived from the root (`log.dir`,
 * `cache_manager.cache_dir`) follow the final root, flag included.
 *
 * Differences from upstream, on purpose:
 * - a boolean written as false stays false (upstream's merge cannot turn off a true default, so
 *   `log_rotation_local_time = false` and `log_rotation_compress = false` have no effect there);
 * - unknown keys are reported as warnings with their dotted path; upstream ignores them;
 * - a wrong type or value refuses the config with the key (or flag) and the allowed values,
 *   every problem at once; values upstream only checks when it uses them are checked here
 *   (`daemon_mode`, `log.level`, `cgroup.memory_limit`, `experimental.tarfs.export_mode`,
 *   durations, negative numbers);
 * - `nydusd_path` and `nydusimage_path` stay empty when not given: the caller looks them up on
 *   PATH when it starts (upstream looks them up while filling defaults);
 * - `log.level` is normalized to this project's level names (`warning` -> `warn`, `fatal` and
 *   `panic` -> `error`);
 * - the d_type check on the root file system is left to whoever creates the root.
 */

/** Upstream HEAD's default root (internal/constant DefaultRootDir). */
export const DEFAULT_ROOT = '/var/lib/containerd/io.containerd.snapshotter.v1.nydus';
export const DEFAULT_ADDRESS = '/run/containerd-nydus/containerd-nydus-grpc.sock';
export const DEFAULT_SYSTEM_ADDRESS = '/run/containerd-nydus/system.sock';
export const DEFAULT_NYDUSD_CONFIG = '/etc/nydus/nydusd-config.json';
/** Where the CRI keychain forwards image requests when `image_service_address` is empty. */
export const DEFAULT_IMAGE_SERVICE_ADDRESS = '/run/containerd/containerd.sock';
/**
 * Longest root, in bytes: nydusd's API socket `<root>/socket/<daemon id>/api<n>.sock` must fit
 * in sun_path's 108 bytes (upstream MaxRootPathLen).
 */
export const MAX_ROOT_LEN = 70;
export const MAX_THREADS = 1024;

export const DAEMON_MODES = ['dedicated', 'shared', 'none'] as const;
export const FS_DRIVERS = ['fusedev', 'fscache', 'blockdev', 'nodev', 'proxy'] as const;
export const RECOVER_POLICIES = ['none', 'restart', 'failover'] as const;
export const FAILOVER_POLICIES = ['none', 'resend', 'flush'] as const;
export const TARFS_EXPORT_MODES = [
  'none',
  'layer_verity_only',
  'image_verity_only',
  'layer_block',
  'image_block',
  'layer_block_with_verity',
  'image_block_with_verity',
] as const;

export type DaemonMode = (typeof DAEMON_MODES)[number];
export type FsDriver = (typeof FS_DRIVERS)[number];
export type RecoverPolicy = (typeof RECOVER_POLICIES)[number];
export type FailoverPolicy = (typeof FAILOVER_POLICIES)[number];
export type TarfsExportMode = (typeof TARFS_EXPORT_MODES)[number];

/** Command-line flags; an absent (or empty) one leaves the file's value. */
export interface SnapshotterFlags {
  /** --config */
  config?: string;
  /** --root */
  root?: string;
  /** --address */
  address?: string;
  /** --nydusd */
  nydusdPath?: string;
  /** --nydus-image */
  nydusImagePath?: string;
  /** --nydusd-config (alias --config-path) */
  nydusdConfig?: string;
  /** --nydus-overlayfs-path */
  nydusOverlayfsPath?: string;
  /** --daemon-mode */
  daemonMode?: string;
  /** --fs-driver */
  fsDriver?: string;
  /** --log-level */
  logLevel?: string;
  /** --log-to-stdout; false given explicitly overrides the file too */
  logToStdout?: boolean;
}

export interface SnapshotterConfig {
  version: 1;
  root: string;
  /** The gRPC socket. */
  address: string;
  /** Owner of the gRPC socket. */
  uid: number;
  gid: number;
  /** `multiple` (upstream's default) is read as its alias `dedicated`. */
  daemonMode: DaemonMode;
  /** Tear down every mount and daemon at exit. */
  cleanupOnClose: boolean;
  system: {
    enable: boolean;
    address: string;
    uid: number;
    gid: number;
    debug: { daemonCpuProfileDurationSecs: number; pprofAddress: string };
  };
  daemon: {
    nydusdConfig: string;
    /** '' when not given: the caller finds nydusd on PATH. */
    nydusdPath: string;
    /** '' when not given: the caller finds nydus-image on PATH. */
    nydusimagePath: string;
    fsDriver: FsDriver;
    recoverPolicy: RecoverPolicy;
    /** 0: nydusd's default. */
    threadsNumber: number;
    /** MB. */
    logRotationSize: number;
    failoverPolicy: FailoverPolicy;
  };
  cgroup: {
    enable: boolean;
    /** '' (no limit), bytes, `<n>KiB`..`<n>PiB`, `<n>Ki`..`<n>Pi`, `<n>B` or `<n>%` of host memory. */
    memoryLimit: string;
  };
  log: {
    logToStdout: boolean;
    /** trace, debug, info, warn or error. */
    level: string;
    dir: string;
    /** MB. */
    logRotationMaxSize: number;
    logRotationMaxBackups: number;
    /** Days. */
    logRotationMaxAge: number;
    logRotationLocalTime: boolean;
    logRotationCompress: boolean;
  };
  metrics: {
    /** '' turns the metrics server off. */
    address: string;
    hungIoIntervalMs: number;
    collectIntervalMs: number;
  };
  remote: {
    convertVpcRegistry: boolean;
    skipSslVerify: boolean;
    mirrorsConfig: { dir: string };
    auth: {
      enableKubeconfigKeychain: boolean;
      /** The file, else the first entry of $KUBECONFIG, else '' (client defaults, in-cluster). */
      kubeconfigPath: string;
      enableCriKeychain: boolean;
      imageServiceAddress: string;
      enableKubeletCredentialProviders: boolean;
      credentialProviderConfig: string;
      credentialProviderBinDir: string;
      /** 0: no renewal. */
      credentialRenewalIntervalMs: number;
    };
  };
  snapshot: {
    enableNydusOverlayfs: boolean;
    nydusOverlayfsPath: string;
    enableKataVolume: boolean;
    syncRemove: boolean;
    enableOverlayfsVolatile: boolean;
  };
  cacheManager: { disable: boolean; gcPeriodMs: number; cacheDir: string };
  image: { publicKeyFile: string; validateSignature: boolean };
  experimental: {
    enableStargz: boolean;
    enableReferrerDetect: boolean;
    enableIndexDetect: boolean;
    enableBackendSource: boolean;
    tarfs: {
      enableTarfs: boolean;
      mountTarfsOnHost: boolean;
      tarfsHint: boolean;
      /** 0: the default. */
      maxConcurrentProc: number;
      exportMode: TarfsExportMode;
    };
  };
  /** the file it came from, or undefined for built-in defaults */
  source?: string;
}

/** A note about the config that does not refuse it: `key` is the dotted TOML path. */
export interface ConfigFinding {
  key: string;
  message: string;
}

// ---- The TOML schema ----

type LeafType =
  | { t: 'string' }
  | { t: 'bool' }
  | { t: 'int'; min: number; max: number }
  /** One of `values`; '' is accepted too and means "the default", as upstream's zero value. */
  | { t: 'enum'; values: readonly string[] }
  | { t: 'duration' }
  | { t: 'memory' };

class Leaf {
  constructor(readonly type: LeafType) {}
}
interface Table {
  readonly [key: string]: Leaf | Table;
}

const UINT32_MAX = 0xffffffff;
const str = (): Leaf => new Leaf({ t: 'string' });
const bool = (): Leaf => new Leaf({ t: 'bool' });
const int = (min = 0, max = Number.MAX_SAFE_INTEGER): Leaf => new Leaf({ t: 'int', min, max });
const oneOf = (values: readonly string[]): Leaf => new Leaf({ t: 'enum', values });
const duration = (): Leaf => new Leaf({ t: 'duration' });

/** logrus' level names, which upstream accepts. */
const LOG_LEVEL_NAMES = ['trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'panic'] as const;

const SCHEMA: Table = {
  version: int(),
  root: str(),
  address: str(),
  uid: int(0, UINT32_MAX),
  gid: int(0, UINT32_MAX),
  daemon_mode: oneOf(['dedicated', 'multiple', 'shared', 'none']),
  cleanup_on_close: bool(),
  system: {
    enable: bool(),
    address: str(),
    uid: int(0, UINT32_MAX),
    gid: int(0, UINT32_MAX),
    debug: { daemon_cpu_profile_duration_secs: int(), pprof_address: str() },
  },
  daemon: {
    nydusd_config: str(),
    nydusd_path: str(),
    nydusimage_path: str(),
    fs_driver: oneOf(FS_DRIVERS),
    recover_policy: oneOf(RECOVER_POLICIES),
    threads_number: int(0, MAX_THREADS),
    log_rotation_size: int(),
    failover_policy: oneOf(FAILOVER_POLICIES),
  },
  cgroup: { enable: bool(), memory_limit: new Leaf({ t: 'memory' }) },
  log: {
    log_to_stdout: bool(),
    level: oneOf(LOG_LEVEL_NAMES),
    dir: str(),
    log_rotation_max_size: int(),
    log_rotation_max_backups: int(),
    log_rotation_max_age: int(),
    log_rotation_local_time: bool(),
    log_rotation_compress: bool(),
  },
  metrics: { address: str(), hung_io_interval: duration(), collect_interval: duration() },
  remote: {
    convert_vpc_registry: bool(),
    skip_ssl_verify: bool(),
    mirrors_config: { dir: str() },
    auth: {
      enable_kubeconfig_keychain: bool(),
      kubeconfig_path: str(),
      enable_cri_keychain: bool(),
      image_service_address: str(),
      enable_kubelet_credential_providers: bool(),
      credential_provider_config: str(),
      credential_provider_bin_dir: str(),
      credential_renewal_interval: duration(),
    },
  },
  snapshot: {
    enable_nydus_overlayfs: bool(),
    nydus_overlayfs_path: str(),
    enable_kata_volume: bool(),
    sync_remove: bool(),
    enable_overlayfs_volatile: bool(),
  },
  cache_manager: { disable: bool(), gc_period: duration(), cache_dir: str() },
  image: { public_key_file: str(), validate_signature: bool() },
  experimental: {
    enable_stargz: bool(),
    enable_referrer_detect: bool(),
    enable_index_detect: bool(),
    enable_backend_source: bool(),
    tarfs: {
      enable_tarfs: bool(),
      mount_tarfs_on_host: bool(),
      tarfs_hint: bool(),
      max_concurrent_proc: int(),
      export_mode: oneOf(TARFS_EXPORT_MODES),
    },
  },
};

/** The flags, the TOML key each sets and how a message names it. */
const FLAG_KEYS: readonly [keyof SnapshotterFlags, string, string][] = [
  ['root', 'root', '--root'],
  ['address', 'address', '--address'],
  ['nydusdPath', 'daemon.nydusd_path', '--nydusd'],
  ['nydusImagePath', 'daemon.nydusimage_path', '--nydus-image'],
  ['nydusdConfig', 'daemon.nydusd_config', '--nydusd-config'],
  ['nydusOverlayfsPath', 'snapshot.nydus_overlayfs_path', '--nydus-overlayfs-path'],
  ['daemonMode', 'daemon_mode', '--daemon-mode'],
  ['fsDriver', 'daemon.fs_driver', '--fs-driver'],
  ['logLevel', 'log.level', '--log-level'],
  ['logToStdout', 'log.log_to_stdout', '--log-to-stdout'],
];

// ---- Durations, in Go's time.ParseDuration syntax ----

const DURATION_UNITS_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const DURATION_PART = /^(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;

/**
 * A Go duration ("10s", "1m30s", "1.5h", "100ms", "0") in milliseconds; undefined when the text
 * is not one or is negative.
 */
export function parseGoDuration(text: string): number | undefined {
  let s = text.startsWith('+') ? text.slice(1) : text;
  if (s === '0') return 0;
  if (s === '') return undefined;
  let ms = 0;
  while (s !== '') {
    const m = DURATION_PART.exec(s);
    if (m === null) return undefined;
    ms += Number(m[1]) * (DURATION_UNITS_MS[m[2] as string] as number);
    s = s.slice(m[0].length);
  }
  return ms;
}

const MEMORY_LIMIT = /^(?:\d+(?:\.\d+)?|(?:\d*\.?\d+)(?:B|KiB|MiB|GiB|TiB|PiB|Ki|Mi|Gi|Ti|Pi)|(\d*\.?\d+)%)$/;

// ---- Checking a document against the schema ----

interface Checked {
  /** Checked values by dotted key (durations in ms). */
  values: Map<string, unknown>;
  problems: string[];
  unknown: ConfigFinding[];
}

function quoteList(values: readonly string[]): string {
  const vs = values.map((v) => JSON.stringify(v));
  return vs.length <= 2 ? vs.join(' or ') : `one of ${vs.join(', ')}`;
}

/** What is wrong with `v` for `leaf`, or its checked value. */
function checkLeaf(leaf: LeafType, v: unknown): { ok: unknown } | { wrong: string } {
  const got = `got ${typeof v === 'bigint' ? `${v}` : describeValue(v)}`;
  switch (leaf.t) {
    case 'string':
      return typeof v === 'string' ? { ok: v } : { wrong: `expected a string, ${got}` };
    case 'bool':
      return typeof v === 'boolean' ? { ok: v } : { wrong: `expected true or false, ${got}` };
    case 'int':
      if ((typeof v !== 'number' || !Number.isInteger(v)) && typeof v !== 'bigint') {
        return { wrong: `expected an integer, ${got}` };
      }
      if (typeof v === 'bigint' || v < leaf.min || v > leaf.max) {
        return {
          wrong:
            leaf.max === Number.MAX_SAFE_INTEGER
              ? `expected an integer ${leaf.min} or more, ${got}`
              : `expected an integer ${leaf.min}..${leaf.max}, ${got}`,
        };
      }
      return { ok: v };
    case 'enum':
      return typeof v === 'string' && (v === '' || leaf.values.includes(v))
        ? { ok: v }
        : { wrong: `expected ${quoteList(leaf.values)}, ${got}` };
    case 'duration': {
      const ms = typeof v === 'string' ? parseGoDuration(v) : undefined;
      return ms !== undefined
        ? { ok: ms }
        : { wrong: `expected a duration such as "100ms", "10s", "1m" or "24h", ${got}` };
    }
    case 'memory': {
      const m = typeof v === 'string' ? MEMORY_LIMIT.exec(v) : null;
      if (v === '' || (m !== null && (m[1] === undefined || Number(m[1]) <= 100))) return { ok: v };
      return {
        wrong: `expected "" (no limit), a byte count, a size with unit B, KiB, MiB, GiB, TiB, PiB, Ki, Mi, Gi, Ti or Pi (such as "200MiB"), or a percentage of host memory up to 100 (such as "10%"), ${got}`,
      };
    }
  }
}

function checkTable(doc: Record<string, unknown>, table: Table, path: string[], out: Checked): void {
  for (const [k, v] of Object.entries(doc)) {
    const at = [...path, k];
    const key = formatKeyPath(at);
    const spec = table[k];
    if (!Object.hasOwn(table, k) || spec === undefined) {
      out.unknown.push({ key, message: 'unknown key, ignored' });
    } else if (spec instanceof Leaf) {
      const r = checkLeaf(spec.type, v);
      if ('ok' in r) out.values.set(key, r.ok);
      else out.problems.push(`${key}: ${r.wrong}`);
    } else if (isPlainObject(v)) {
      checkTable(v, spec, at, out);
    } else {
      out.problems.push(`${key}: expected a table, got ${describeValue(v)}`);
    }
  }
}

function leafAt(key: string): LeafType {
  let node: Leaf | Table = SCHEMA;
  for (const k of key.split('.')) node = (node as Table)[k] as Leaf | Table;
  return (node as Leaf).type;
}

function invalid(source: string | undefined, problems: readonly string[]): NydusError {
  const where =
    source === undefined ? 'Invalid snapshotter configuration' : `Invalid snapshotter config "${source}"`;
  return new NydusError('ERR_INVALID_ARG', `${where}: ${problems.join('; ')}`);
}

function readDocument(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new NydusError('ERR_NOT_FOUND', `Snapshotter config "${file}" does not exist`);
    throw new NydusError('ERR_IO', `Cannot read snapshotter config "${file}": ${errorText(e)}`, { cause: e });
  }
  try {
    return parseToml(text, { integersAsBigInt: 'asNeeded' });
  } catch (e) {
    const what =
      e instanceof TomlError
        ? `line ${e.line} column ${e.column}: ${(e.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '')}`
        : errorText(e);
    throw new NydusError('ERR_INVALID_ARG', `Invalid snapshotter config "${file}": not valid TOML: ${what}`, {
      cause: e,
    });
  }
}

function dirExists(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function fileExists(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The snapshotter's configuration from `flags.config` (a TOML file, `version = 1`), the other
 * flags on top, and the defaults. Throws NydusError ERR_INVALID_ARG naming every key (or flag)
 * that is wrong and what it allows; ERR_NOT_FOUND / ERR_IO when the file cannot be read.
 * `warnings` lists unknown keys and settings that are overridden or have no effect.
 */
export function loadSnapshotterConfig(
  flags: SnapshotterFlags,
  env: NodeJS.ProcessEnv = process.env,
): { config: SnapshotterConfig; warnings: ConfigFinding[] } {
  const source = flags.config === undefined || flags.config === '' ? undefined : flags.config;
  const checked: Checked = { values: new Map(), problems: [], unknown: [] };
  if (source !== undefined) {
    const doc = readDocument(source);
    const version = doc['version'];
    if (version !== 1) {
      throw invalid(source, [
        version === undefined
          ? 'version: missing, expected 1'
          : `version: expected 1, got ${typeof version === 'bigint' ? `${version}` : describeValue(version)}`,
      ]);
    }
    checkTable(doc, SCHEMA, [], checked);
  }

  // Flags override the file; a key set by a flag is named by the flag in messages.
  const flagOf = new Map<string, string>();
  for (const [prop, key, flag] of FLAG_KEYS) {
    const v = flags[prop];
    if (v === undefined || v === '') continue;
    flagOf.set(key, flag);
    const r = checkLeaf(leafAt(key), v);
    if ('ok' in r) checked.values.set(key, r.ok);
    else checked.problems.push(`${flag}: ${r.wrong}`);
  }
  if (checked.problems.length > 0) throw invalid(source, checked.problems);

  const { values } = checked;
  const name = (key: string): string => flagOf.get(key) ?? key;
  const s = (key: string, dflt = ''): string => {
    const v = values.get(key) as string | undefined;
    return v === undefined || v === '' ? dflt : v;
  };
  const b = (key: string, dflt = false): boolean => (values.get(key) as boolean | undefined) ?? dflt;
  const n = (key: string, dflt = 0): number => {
    const v = values.get(key) as number | undefined;
    return v === undefined || v === 0 ? dflt : v;
  };

  const warnings: ConfigFinding[] = [...checked.unknown];
  const root = s('root', DEFAULT_ROOT);
  const fsDriver = s('daemon.fs_driver', 'fusedev') as FsDriver;
  let daemonMode = s('daemon_mode', 'dedicated');
  if (daemonMode === 'multiple') daemonMode = 'dedicated';
  if (fsDriver === 'fscache' && daemonMode !== 'shared') {
    warnings.push({
      key: name('daemon_mode'),
      message: `the fscache driver only supports "shared" mode, "${daemonMode}" overridden`,
    });
    daemonMode = 'shared';
  }
  const level = s('log.level', 'info');
  const kubeconfigFromEnv = (env['KUBECONFIG'] ?? '').split(':').find((p) => p !== '') ?? '';

  const config: SnapshotterConfig = {
    version: 1,
    root,
    address: s('address', DEFAULT_ADDRESS),
    uid: n('uid'),
    gid: n('gid'),
    daemonMode: daemonMode as DaemonMode,
    cleanupOnClose: b('cleanup_on_close'),
    system: {
      enable: b('system.enable'),
      address: s('system.address', DEFAULT_SYSTEM_ADDRESS),
      uid: n('system.uid'),
      gid: n('system.gid'),
      debug: {
        daemonCpuProfileDurationSecs: n('system.debug.daemon_cpu_profile_duration_secs'),
        pprofAddress: s('system.debug.pprof_address'),
      },
    },
    daemon: {
      nydusdConfig: s('daemon.nydusd_config', DEFAULT_NYDUSD_CONFIG),
      nydusdPath: s('daemon.nydusd_path'),
      nydusimagePath: s('daemon.nydusimage_path'),
      fsDriver,
      recoverPolicy: s('daemon.recover_policy', 'restart') as RecoverPolicy,
      threadsNumber: n('daemon.threads_number'),
      logRotationSize: n('daemon.log_rotation_size', 100),
      failoverPolicy: s('daemon.failover_policy', 'resend') as FailoverPolicy,
    },
    cgroup: { enable: b('cgroup.enable'), memoryLimit: s('cgroup.memory_limit') },
    log: {
      logToStdout: b('log.log_to_stdout'),
      level: level === 'warning' ? 'warn' : level === 'fatal' || level === 'panic' ? 'error' : level,
      dir: s('log.dir', join(root, 'logs')),
      logRotationMaxSize: n('log.log_rotation_max_size', 200),
      logRotationMaxBackups: n('log.log_rotation_max_backups', 5),
      logRotationMaxAge: n('log.log_rotation_max_age'),
      logRotationLocalTime: b('log.log_rotation_local_time', true),
      logRotationCompress: b('log.log_rotation_compress', true),
    },
    metrics: {
      address: s('metrics.address'),
      hungIoIntervalMs: n('metrics.hung_io_interval', 10_000),
      collectIntervalMs: n('metrics.collect_interval', 60_000),
    },
    remote: {
      convertVpcRegistry: b('remote.convert_vpc_registry'),
      skipSslVerify: b('remote.skip_ssl_verify'),
      mirrorsConfig: { dir: s('remote.mirrors_config.dir') },
      auth: {
        enableKubeconfigKeychain: b('remote.auth.enable_kubeconfig_keychain'),
        kubeconfigPath: s('remote.auth.kubeconfig_path', kubeconfigFromEnv),
        enableCriKeychain: b('remote.auth.enable_cri_keychain'),
        imageServiceAddress: s('remote.auth.image_service_address', DEFAULT_IMAGE_SERVICE_ADDRESS),
        enableKubeletCredentialProviders: b('remote.auth.enable_kubelet_credential_providers'),
        credentialProviderConfig: s('remote.auth.credential_provider_config'),
        credentialProviderBinDir: s('remote.auth.credential_provider_bin_dir'),
        credentialRenewalIntervalMs: n('remote.auth.credential_renewal_interval'),
      },
    },
    snapshot: {
      enableNydusOverlayfs: b('snapshot.enable_nydus_overlayfs'),
      nydusOverlayfsPath: s('snapshot.nydus_overlayfs_path', 'nydus-overlayfs'),
      enableKataVolume: b('snapshot.enable_kata_volume'),
      syncRemove: b('snapshot.sync_remove'),
      enableOverlayfsVolatile: b('snapshot.enable_overlayfs_volatile'),
    },
    cacheManager: {
      disable: b('cache_manager.disable'),
      gcPeriodMs: n('cache_manager.gc_period', 24 * 3_600_000),
      cacheDir: s('cache_manager.cache_dir', join(root, 'cache')),
    },
    image: {
      publicKeyFile: s('image.public_key_file'),
      validateSignature: b('image.validate_signature'),
    },
    experimental: {
      enableStargz: b('experimental.enable_stargz'),
      enableReferrerDetect: b('experimental.enable_referrer_detect'),
      enableIndexDetect: b('experimental.enable_index_detect'),
      enableBackendSource: b('experimental.enable_backend_source'),
      tarfs: {
        enableTarfs: b('experimental.tarfs.enable_tarfs'),
        mountTarfsOnHost: b('experimental.tarfs.mount_tarfs_on_host'),
        tarfsHint: b('experimental.tarfs.tarfs_hint'),
        maxConcurrentProc: n('experimental.tarfs.max_concurrent_proc'),
        exportMode: s('experimental.tarfs.export_mode', 'none') as TarfsExportMode,
      },
    },
  };
  if (source !== undefined) config.source = source;

  // Cross-key rules (upstream ValidateConfig).
  const problems: string[] = [];
  const rootLen = Buffer.byteLength(root);
  if (rootLen > MAX_ROOT_LEN) {
    problems.push(
      `${name('root')}: ${JSON.stringify(root)} is ${rootLen} bytes, longer than the ${MAX_ROOT_LEN}-byte limit (nydusd socket paths under it must fit in 108 bytes)`,
    );
  }
  if (config.remote.auth.enableCriKeychain && config.remote.auth.enableKubeconfigKeychain) {
    problems.push(
      'remote.auth.enable_cri_keychain: cannot be true together with remote.auth.enable_kubeconfig_keychain, choose one keychain',
    );
  }
  const mirrors = config.remote.mirrorsConfig.dir;
  if (mirrors !== '' && !dirExists(mirrors)) {
    problems.push(`remote.mirrors_config.dir: directory ${JSON.stringify(mirrors)} does not exist`);
  }
  if (config.image.validateSignature) {
    const key = config.image.publicKeyFile;
    if (key === '') {
      problems.push('image.public_key_file: missing, required when image.validate_signature is true');
    } else if (!fileExists(key)) {
      problems.push(`image.public_key_file: file ${JSON.stringify(key)} does not exist`);
    }
  }
  if (problems.length > 0) throw invalid(source, problems);

  if (config.experimental.enableBackendSource && !config.system.enable) {
    warnings.push({
      key: 'experimental.enable_backend_source',
      message: 'has no effect unless system.enable is true',
    });
  }
  return { config, warnings };
}
