import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { NydusError } from '../../src/errors/errors.js';
import {
  DEFAULT_ROOT,
  loadSnapshotterConfig,
  parseGoDuration,
  type SnapshotterConfig,
  type SnapshotterFlags,
} from '../../src/snapshotter/config.js';

const dir = mkdtempSync(join(tmpdir(), 'nydus-snapshotter-config-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string): string {
  const p = join(dir, `config-${n++}.toml`);
  writeFileSync(p, text);
  return p;
}

function load(text: string, flags: SnapshotterFlags = {}, env: NodeJS.ProcessEnv = {}) {
  return loadSnapshotterConfig({ config: file(text), ...flags }, env);
}

/** Asserts the config is refused with ERR_INVALID_ARG and a message matching every pattern. */
function refused(fn: () => unknown, ...patterns: RegExp[]): string {
  let message = '';
  assert.throws(fn, (e: NydusError) => {
    assert.equal(e.code, 'ERR_INVALID_ARG', e.message);
    for (const p of patterns) assert.match(e.message, p);
    message = e.message;
    return true;
  });
  return message;
}

const DEFAULTS: SnapshotterConfig = {
  version: 1,
  root: '/var/lib/containerd/io.containerd.snapshotter.v1.nydus',
  address: '/run/containerd-nydus/containerd-nydus-grpc.sock',
  uid: 0,
  gid: 0,
  daemonMode: 'dedicated',
  cleanupOnClose: false,
  system: {
    enable: false,
    address: '/run/containerd-nydus/system.sock',
    uid: 0,
    gid: 0,
    debug: { daemonCpuProfileDurationSecs: 0, pprofAddress: '' },
  },
  daemon: {
    nydusdConfig: '/etc/nydus/nydusd-config.json',
    nydusdPath: '',
    nydusimagePath: '',
    fsDriver: 'fusedev',
    recoverPolicy: 'restart',
    threadsNumber: 0,
    logRotationSize: 100,
    failoverPolicy: 'resend',
  },
  cgroup: { enable: false, memoryLimit: '' },
  log: {
    logToStdout: false,
    level: 'info',
    dir: '/var/lib/containerd/io.containerd.snapshotter.v1.nydus/logs',
    logRotationMaxSize: 200,
    logRotationMaxBackups: 5,
    logRotationMaxAge: 0,
    logRotationLocalTime: true,
    logRotationCompress: true,
  },
  metrics: { address: '', hungIoIntervalMs: 10_000, collectIntervalMs: 60_000 },
  remote: {
    convertVpcRegistry: false,
    skipSslVerify: false,
    mirrorsConfig: { dir: '' },
    auth: {
      enableKubeconfigKeychain: false,
      kubeconfigPath: '',
      enableCriKeychain: false,
      imageServiceAddress: '/run/containerd/containerd.sock',
      enableKubeletCredentialProviders: false,
      credentialProviderConfig: '',
      credentialProviderBinDir: '',
      credentialRenewalIntervalMs: 0,
    },
  },
  snapshot: {
    enableNydusOverlayfs: false,
    nydusOverlayfsPath: 'nydus-overlayfs',
    enableKataVolume: false,
    syncRemove: false,
    enableOverlayfsVolatile: false,
  },
  cacheManager: {
    disable: false,
    gcPeriodMs: 86_400_000,
    cacheDir: '/var/lib/containerd/io.containerd.snapshotter.v1.nydus/cache',
  },
  image: { publicKeyFile: '', validateSignature: false },
  experimental: {
    enableStargz: false,
    enableReferrerDetect: false,
    enableIndexDetect: false,
    enableBackendSource: false,
    tarfs: {
      enableTarfs: false,
      mountTarfsOnHost: false,
      tarfsHint: false,
      maxConcurrentProc: 0,
      exportMode: 'none',
    },
  },
};

test('defaults without a file: upstream HEAD root, dedicated mode, restart, derived dirs', () => {
  const { config, warnings } = loadSnapshotterConfig({}, {});
  assert.deepEqual(config, DEFAULTS);
  assert.equal(config.root, DEFAULT_ROOT);
  assert.equal(config.source, undefined);
  assert.deepEqual(warnings, []);
  // An empty --config is no file.
  assert.deepEqual(loadSnapshotterConfig({ config: '' }, {}).config, DEFAULTS);
});

/**
 * A sample with every section and key, written for this test; its values follow upstream's
 * misc/snapshotter/config.toml (failover recover policy, 4 threads, metrics on :9110...), with
 * the keys the sample leaves commented out set as well.
 */
function sample(mirrors: string, key: string): string {
  return `
version = 1
root = "/var/lib/containerd/io.containerd.snapshotter.v1.nydus"
address = "/run/containerd-nydus/containerd-nydus-grpc.sock"
uid = 0
gid = 1001
daemon_mode = "dedicated"
cleanup_on_close = false

[system]
enable = true
address = "/run/containerd-nydus/system.sock"
uid = 0
gid = 1002

[system.debug]
daemon_cpu_profile_duration_secs = 5
pprof_address = "127.0.0.1:6060"

[daemon]
nydusd_config = "/etc/nydus/nydusd-config.fusedev.json"
nydusd_path = "/usr/local/bin/nydusd"
nydusimage_path = "/usr/local/bin/nydus-image"
fs_driver = "fusedev"
recover_policy = "failover"
threads_number = 4
log_rotation_size = 100
failover_policy = "flush"

[cgroup]
enable = true
memory_limit = "200MiB"

[log]
log_to_stdout = false
level = "warning"
dir = "/var/log/nydus"
log_rotation_compress = false
log_rotation_local_time = false
log_rotation_max_age = 7
log_rotation_max_backups = 3
log_rotation_max_size = 100

[metrics]
address = ":9110"
hung_io_interval = "10s"
collect_interval = "1m"

[remote]
convert_vpc_registry = false
skip_ssl_verify = true

[remote.mirrors_config]
dir = ${JSON.stringify(mirrors)}

[remote.auth]
enable_kubeconfig_keychain = true
kubeconfig_path = "/etc/kubernetes/admin.conf"
enable_cri_keychain = false
image_service_address = "/run/containerd/containerd.sock"
enable_kubelet_credential_providers = true
credential_provider_config = "/etc/kubernetes/credential-provider.yaml"
credential_provider_bin_dir = "/usr/libexec/kubernetes/credential-providers"
credential_renewal_interval = "10m"

[snapshot]
enable_nydus_overlayfs = true
nydus_overlayfs_path = "/usr/local/bin/nydus-overlayfs"
enable_kata_volume = true
sync_remove = true
enable_overlayfs_volatile = true

[cache_manager]
disable = false
gc_period = "24h"
cache_dir = "/var/cache/nydus"

[image]
public_key_file = ${JSON.stringify(key)}
validate_signature = true

[experimental]
enable_stargz = true
enable_referrer_detect = true
enable_index_detect = true
enable_backend_source = true

[experimental.tarfs]
enable_tarfs = true
mount_tarfs_on_host = true
tarfs_hint = true
max_concurrent_proc = 2
export_mode = "layer_block_with_verity"
`;
}

test('a sample with every section parses to every value', () => {
  const mirrors = join(dir, 'certs.d');
  mkdirSync(mirrors, { recursive: true });
  const key = join(dir, 'signing.pub');
  writeFileSync(key, 'key');
  const path = file(sample(mirrors, key));
  const { config, warnings } = loadSnapshotterConfig({ config: path }, {});
  assert.deepEqual(warnings, []);
  const want: SnapshotterConfig = {
    version: 1,
    root: '/var/lib/containerd/io.containerd.snapshotter.v1.nydus',
    address: '/run/containerd-nydus/containerd-nydus-grpc.sock',
    uid: 0,
    gid: 1001,
    daemonMode: 'dedicated',
    cleanupOnClose: false,
    system: {
      enable: true,
      address: '/run/containerd-nydus/system.sock',
      uid: 0,
      gid: 1002,
      debug: { daemonCpuProfileDurationSecs: 5, pprofAddress: '127.0.0.1:6060' },
    },
    daemon: {
      nydusdConfig: '/etc/nydus/nydusd-config.fusedev.json',
      nydusdPath: '/usr/local/bin/nydusd',
      nydusimagePath: '/usr/local/bin/nydus-image',
      fsDriver: 'fusedev',
      recoverPolicy: 'failover',
      threadsNumber: 4,
      logRotationSize: 100,
      failoverPolicy: 'flush',
    },
    cgroup: { enable: true, memoryLimit: '200MiB' },
    log: {
      logToStdout: false,
      level: 'warn',
      dir: '/var/log/nydus',
      logRotationMaxSize: 100,
      logRotationMaxBackups: 3,
      logRotationMaxAge: 7,
      // Explicit false stays false (upstream's merge quirk is not kept).
      logRotationLocalTime: false,
      logRotationCompress: false,
    },
    metrics: { address: ':9110', hungIoIntervalMs: 10_000, collectIntervalMs: 60_000 },
    remote: {
      convertVpcRegistry: false,
      skipSslVerify: true,
      mirrorsConfig: { dir: mirrors },
      auth: {
        enableKubeconfigKeychain: true,
        kubeconfigPath: '/etc/kubernetes/admin.conf',
        enableCriKeychain: false,
        imageServiceAddress: '/run/containerd/containerd.sock',
        enableKubeletCredentialProviders: true,
        credentialProviderConfig: '/etc/kubernetes/credential-provider.yaml',
        credentialProviderBinDir: '/usr/libexec/kubernetes/credential-providers',
        credentialRenewalIntervalMs: 600_000,
      },
    },
    snapshot: {
      enableNydusOverlayfs: true,
      nydusOverlayfsPath: '/usr/local/bin/nydus-overlayfs',
      enableKataVolume: true,
      syncRemove: true,
      enableOverlayfsVolatile: true,
    },
    cacheManager: { disable: false, gcPeriodMs: 86_400_000, cacheDir: '/var/cache/nydus' },
    image: { publicKeyFile: key, validateSignature: true },
    experimental: {
      enableStargz: true,
      enableReferrerDetect: true,
      enableIndexDetect: true,
      enableBackendSource: true,
      tarfs: {
        enableTarfs: true,
        mountTarfsOnHost: true,
        tarfsHint: true,
        maxConcurrentProc: 2,
        exportMode: 'layer_block_with_verity',
      },
    },
    source: path,
  };
  assert.deepEqual(config, want);
});

test('a minimal file: version only, everything else defaults', () => {
  const { config, warnings } = load('version = 1\n');
  assert.deepEqual({ ...config, source: undefined }, { ...DEFAULTS, source: undefined });
  assert.deepEqual(warnings, []);
});

test('flags override the file; an empty flag does not; the root flag moves derived dirs', () => {
  const toml = `version = 1
root = "/srv/file-root"
address = "/run/file.sock"
daemon_mode = "shared"
[daemon]
nydusd_config = "/etc/file.json"
nydusd_path = "/file/nydusd"
nydusimage_path = "/file/nydus-image"
fs_driver = "blockdev"
[snapshot]
nydus_overlayfs_path = "/file/nydus-overlayfs"
[log]
level = "debug"
log_to_stdout = true
`;
  const fromFile = load(toml).config;
  assert.equal(fromFile.root, '/srv/file-root');
  assert.equal(fromFile.log.dir, '/srv/file-root/logs');
  assert.equal(fromFile.cacheManager.cacheDir, '/srv/file-root/cache');
  assert.equal(fromFile.daemonMode, 'shared');
  assert.equal(fromFile.log.logToStdout, true);

  const { config } = load(toml, {
    root: '/srv/flag-root',
    address: '/run/flag.sock',
    nydusdPath: '/flag/nydusd',
    nydusImagePath: '/flag/nydus-image',
    nydusdConfig: '/etc/flag.json',
    nydusOverlayfsPath: 'flag-overlayfs',
    daemonMode: 'none',
    fsDriver: 'proxy',
    logLevel: 'trace',
    logToStdout: false,
  });
  assert.equal(config.root, '/srv/flag-root');
  assert.equal(config.log.dir, '/srv/flag-root/logs');
  assert.equal(config.cacheManager.cacheDir, '/srv/flag-root/cache');
  assert.equal(config.address, '/run/flag.sock');
  assert.equal(config.daemon.nydusdPath, '/flag/nydusd');
  assert.equal(config.daemon.nydusimagePath, '/flag/nydus-image');
  assert.equal(config.daemon.nydusdConfig, '/etc/flag.json');
  assert.equal(config.snapshot.nydusOverlayfsPath, 'flag-overlayfs');
  assert.equal(config.daemonMode, 'none');
  assert.equal(config.daemon.fsDriver, 'proxy');
  assert.equal(config.log.level, 'trace');
  assert.equal(config.log.logToStdout, false, 'an explicit --log-to-stdout=false wins over the file');

  const kept = load(toml, { root: '', fsDriver: '' }).config;
  assert.equal(kept.root, '/srv/file-root');
  assert.equal(kept.daemon.fsDriver, 'blockdev');

  // Flags without a file.
  const only = loadSnapshotterConfig({ root: '/r', logToStdout: true, logLevel: 'error' }, {}).config;
  assert.equal(only.root, '/r');
  assert.equal(only.log.dir, '/r/logs');
  assert.equal(only.log.logToStdout, true);
  assert.equal(only.log.level, 'error');
  assert.equal(only.source, undefined);
});

test("'multiple' is read as 'dedicated', in the file and as a flag", () => {
  assert.equal(load('version = 1\ndaemon_mode = "multiple"\n').config.daemonMode, 'dedicated');
  assert.equal(loadSnapshotterConfig({ daemonMode: 'multiple' }, {}).config.daemonMode, 'dedicated');
  assert.equal(loadSnapshotterConfig({ daemonMode: 'dedicated' }, {}).config.daemonMode, 'dedicated');
  assert.equal(loadSnapshotterConfig({ daemonMode: 'shared' }, {}).config.daemonMode, 'shared');
});

test('zero values take the defaults, as upstream merges', () => {
  const { config } = load(`version = 1
root = ""
daemon_mode = ""
[daemon]
recover_policy = ""
fs_driver = ""
failover_policy = ""
log_rotation_size = 0
[log]
level = ""
log_rotation_max_size = 0
log_rotation_max_backups = 0
[metrics]
hung_io_interval = "0s"
collect_interval = "0"
[cache_manager]
gc_period = "0s"
[remote.auth]
credential_renewal_interval = "0s"
[experimental.tarfs]
export_mode = ""
`);
  assert.equal(config.root, DEFAULT_ROOT);
  assert.equal(config.daemonMode, 'dedicated');
  assert.equal(config.daemon.recoverPolicy, 'restart');
  assert.equal(config.daemon.fsDriver, 'fusedev');
  assert.equal(config.daemon.failoverPolicy, 'resend');
  assert.equal(config.daemon.logRotationSize, 100);
  assert.equal(config.log.level, 'info');
  assert.equal(config.log.logRotationMaxSize, 200);
  assert.equal(config.log.logRotationMaxBackups, 5);
  assert.equal(config.metrics.hungIoIntervalMs, 10_000);
  assert.equal(config.metrics.collectIntervalMs, 60_000);
  assert.equal(config.cacheManager.gcPeriodMs, 86_400_000);
  assert.equal(config.remote.auth.credentialRenewalIntervalMs, 0);
  assert.equal(config.experimental.tarfs.exportMode, 'none');
});

test('durations in Go syntax', () => {
  const cases: [string, number | undefined][] = [
    ['10s', 10_000],
    ['1m', 60_000],
    ['24h', 86_400_000],
    ['100ms', 100],
    ['1m30s', 90_000],
    ['1.5h', 5_400_000],
    ['.5s', 500],
    ['1500us', 1.5],
    ['2µs', 0.002],
    ['3μs', 0.003],
    ['1000000ns', 1],
    ['1h2m3s4ms', 3_723_004],
    ['+5s', 5000],
    ['0', 0],
    ['0s', 0],
    ['', undefined],
    ['10', undefined],
    ['-5s', undefined],
    ['5 s', undefined],
    ['5d', undefined],
    ['s', undefined],
    ['1h-', undefined],
  ];
  for (const [text, want] of cases) assert.equal(parseGoDuration(text), want, text);

  const { config } = load(`version = 1
[metrics]
hung_io_interval = "250ms"
collect_interval = "1m30s"
[cache_manager]
gc_period = "2h"
[remote.auth]
credential_renewal_interval = "1h"
`);
  assert.equal(config.metrics.hungIoIntervalMs, 250);
  assert.equal(config.metrics.collectIntervalMs, 90_000);
  assert.equal(config.cacheManager.gcPeriodMs, 7_200_000);
  assert.equal(config.remote.auth.credentialRenewalIntervalMs, 3_600_000);

  refused(
    () => load('version = 1\n[metrics]\nhung_io_interval = "10"\n'),
    /metrics\.hung_io_interval: expected a duration such as "100ms", "10s", "1m" or "24h", got "10"/,
  );
  refused(
    () => load('version = 1\n[cache_manager]\ngc_period = 86400\n'),
    /cache_manager\.gc_period: .* got 86400/,
  );
  refused(
    () => load('version = 1\n[remote.auth]\ncredential_renewal_interval = "-1m"\n'),
    /remote\.auth\.credential_renewal_interval: expected a duration/,
  );
});

test('version = 1 is required in a file', () => {
  refused(
    () => load('root = "/x"\n'),
    /Invalid snapshotter config ".*config-\d+\.toml": version: missing, expected 1$/,
  );
  refused(() => load('version = 2\n'), /version: expected 1, got 2$/);
  refused(() => load('version = "1"\n'), /version: expected 1, got "1"$/);
  refused(() => load(''), /version: missing, expected 1/);
  // Other problems are not reported before the version is right.
  const m = refused(() => load('version = 3\n[daemon]\nfs_driver = "x"\n'), /version/);
  assert.doesNotMatch(m, /fs_driver/);
});

test('wrong types and values name the key and what is allowed', () => {
  const one = (toml: string, re: RegExp) => refused(() => load(`version = 1\n${toml}\n`), re);
  one('root = 5', /: root: expected a string, got 5$/);
  one('cleanup_on_close = "yes"', /cleanup_on_close: expected true or false, got "yes"/);
  one('uid = -1', /uid: expected an integer 0\.\.4294967295, got -1/);
  one('gid = 1.5', /gid: expected an integer, got 1\.5/);
  one(
    'daemon_mode = "single"',
    /daemon_mode: expected one of "dedicated", "multiple", "shared", "none", got "single"/,
  );
  one(
    '[daemon]\nfs_driver = "fuse"',
    /daemon\.fs_driver: expected one of "fusedev", "fscache", "blockdev", "nodev", "proxy", got "fuse"/,
  );
  one(
    '[daemon]\nrecover_policy = "always"',
    /daemon\.recover_policy: expected one of "none", "restart", "failover", got "always"/,
  );
  one(
    '[daemon]\nfailover_policy = "retry"',
    /daemon\.failover_policy: expected one of "none", "resend", "flush", got "retry"/,
  );
  one('[daemon]\nthreads_number = 1025', /daemon\.threads_number: expected an integer 0\.\.1024, got 1025/);
  one('[daemon]\nthreads_number = -1', /daemon\.threads_number: expected an integer 0\.\.1024, got -1/);
  one('[daemon]\nlog_rotation_size = -5', /daemon\.log_rotation_size: expected an integer 0 or more, got -5/);
  one(
    '[log]\nlevel = "loud"',
    /log\.level: expected one of "trace", "debug", "info", "warn", "warning", "error"/,
  );
  one(
    '[cgroup]\nmemory_limit = "200MB"',
    /cgroup\.memory_limit: expected "" \(no limit\), a byte count, .*got "200MB"/,
  );
  one('[cgroup]\nmemory_limit = "150%"', /cgroup\.memory_limit: .*got "150%"/);
  one('[cgroup]\nmemory_limit = 209715200', /cgroup\.memory_limit: .*got 209715200/);
  one(
    '[experimental.tarfs]\nexport_mode = "block"',
    /experimental\.tarfs\.export_mode: expected one of "none", "layer_verity_only", .*"image_block_with_verity", got "block"/,
  );
  one(
    '[system.debug]\ndaemon_cpu_profile_duration_secs = "5"',
    /system\.debug\.daemon_cpu_profile_duration_secs: expected an integer, got "5"/,
  );
  one('[metrics]\naddress = 9110', /metrics\.address: expected a string, got 9110/);
  one('daemon = "fusedev"', /daemon: expected a table, got "fusedev"/);
  one('[remote]\nauth = []', /remote\.auth: expected a table, got an array/);
  one(
    '[daemon]\nthreads_number = 99999999999999999999',
    /daemon\.threads_number: expected an integer 0\.\.1024, got 99999999999999999999/,
  );
  one(
    '[image]\nvalidate_signature = 1979-05-27',
    /image\.validate_signature: expected true or false, got a date/,
  );

  // Every problem at once.
  refused(
    () => load('version = 1\nroot = 1\n[daemon]\nfs_driver = "x"\nthreads_number = 2000\n'),
    /root: expected a string, got 1; daemon\.fs_driver: .*; daemon\.threads_number: /,
  );

  // A bad flag is named by the flag.
  refused(
    () => loadSnapshotterConfig({ fsDriver: 'fuse' }, {}),
    /Invalid snapshotter configuration: --fs-driver: expected one of "fusedev"/,
  );
  refused(
    () => loadSnapshotterConfig({ daemonMode: 'single' }, {}),
    /--daemon-mode: expected one of "dedicated", "multiple", "shared", "none", got "single"/,
  );
  refused(() => load('version = 1\n', { logLevel: 'verbose' }), /--log-level: expected one of "trace"/);

  // Accepted forms of memory_limit.
  for (const v of ['', '209715200', '200MiB', '200Mi', '1.5GiB', '10%', '512B', '0.5%']) {
    assert.equal(load(`version = 1\n[cgroup]\nmemory_limit = "${v}"\n`).config.cgroup.memoryLimit, v);
  }
});

test('cross-key validation names the keys', () => {
  // Root: at most 70 bytes.
  const root70 = `/${'r'.repeat(69)}`;
  assert.equal(loadSnapshotterConfig({ root: root70 }, {}).config.root, root70);
  const root71 = `/${'r'.repeat(70)}`;
  refused(
    () => load(`version = 1\nroot = "${root71}"\n`),
    /: root: ".*" is 71 bytes, longer than the 70-byte limit/,
  );
  refused(
    () => loadSnapshotterConfig({ root: root71 }, {}),
    /--root: ".*" is 71 bytes, longer than the 70-byte limit/,
  );
  // Bytes, not characters.
  refused(() => loadSnapshotterConfig({ root: `/${'é'.repeat(35)}` }, {}), /is 71 bytes/);

  // One keychain at most.
  refused(
    () => load('version = 1\n[remote.auth]\nenable_cri_keychain = true\nenable_kubeconfig_keychain = true\n'),
    /remote\.auth\.enable_cri_keychain: cannot be true together with remote\.auth\.enable_kubeconfig_keychain/,
  );

  // The mirrors directory must exist.
  const missing = join(dir, 'no-such-certs.d');
  refused(
    () => load(`version = 1\n[remote.mirrors_config]\ndir = "${missing}"\n`),
    /remote\.mirrors_config\.dir: directory ".*no-such-certs\.d" does not exist/,
  );
  const notDir = file('');
  refused(
    () => load(`version = 1\n[remote.mirrors_config]\ndir = "${notDir}"\n`),
    /remote\.mirrors_config\.dir: directory/,
  );
  const mirrors = join(dir, 'mirrors-ok');
  mkdirSync(mirrors, { recursive: true });
  assert.equal(
    load(`version = 1\n[remote.mirrors_config]\ndir = "${mirrors}"\n`).config.remote.mirrorsConfig.dir,
    mirrors,
  );

  // The signature key must be there when signatures are validated.
  refused(
    () => load('version = 1\n[image]\nvalidate_signature = true\n'),
    /image\.public_key_file: missing, required when image\.validate_signature is true/,
  );
  refused(
    () =>
      load(
        `version = 1\n[image]\nvalidate_signature = true\npublic_key_file = "${join(dir, 'nokey.pub')}"\n`,
      ),
    /image\.public_key_file: file ".*nokey\.pub" does not exist/,
  );
  // Not validating: a missing key file does not matter.
  assert.equal(
    load(`version = 1\n[image]\npublic_key_file = "${join(dir, 'nokey.pub')}"\n`).config.image
      .validateSignature,
    false,
  );
});

test('unknown keys are warnings with their dotted path; the rest still loads', () => {
  const { config, warnings } = load(`version = 1
root = "/srv/n"
rooot = "/typo"
[daemon]
fs_driver = "fusedev"
fs-driver = "fscache"
[daemon.extra]
x = 1
[remote.auth]
enable_cri_keychain = true
"odd.key" = 1
[experimental.tarfs]
enable = true
[nonsense]
a = 1
`);
  assert.equal(config.root, '/srv/n');
  assert.equal(config.remote.auth.enableCriKeychain, true);
  assert.deepEqual(warnings, [
    { key: 'rooot', message: 'unknown key, ignored' },
    { key: 'daemon.fs-driver', message: 'unknown key, ignored' },
    { key: 'daemon.extra', message: 'unknown key, ignored' },
    { key: 'remote.auth["odd.key"]', message: 'unknown key, ignored' },
    { key: 'experimental.tarfs.enable', message: 'unknown key, ignored' },
    { key: 'nonsense', message: 'unknown key, ignored' },
  ]);
  // Names of Object.prototype are keys like any other.
  assert.deepEqual(load('version = 1\nconstructor = 1\n').warnings, [
    { key: 'constructor', message: 'unknown key, ignored' },
  ]);
});

test('fscache forces shared mode with a warning; backend source without the system controller warns', () => {
  const r = load('version = 1\ndaemon_mode = "dedicated"\n[daemon]\nfs_driver = "fscache"\n');
  assert.equal(r.config.daemonMode, 'shared');
  assert.deepEqual(r.warnings, [
    { key: 'daemon_mode', message: 'the fscache driver only supports "shared" mode, "dedicated" overridden' },
  ]);
  const f = loadSnapshotterConfig({ fsDriver: 'fscache', daemonMode: 'none' }, {});
  assert.equal(f.config.daemonMode, 'shared');
  assert.equal(f.warnings[0]?.key, '--daemon-mode');
  assert.deepEqual(
    load('version = 1\ndaemon_mode = "shared"\n[daemon]\nfs_driver = "fscache"\n').warnings,
    [],
  );

  assert.deepEqual(load('version = 1\n[experimental]\nenable_backend_source = true\n').warnings, [
    { key: 'experimental.enable_backend_source', message: 'has no effect unless system.enable is true' },
  ]);
});

test('log levels as upstream names them, normalized', () => {
  const lv = (l: string) => loadSnapshotterConfig({ logLevel: l }, {}).config.log.level;
  assert.equal(lv('trace'), 'trace');
  assert.equal(lv('debug'), 'debug');
  assert.equal(lv('warn'), 'warn');
  assert.equal(lv('warning'), 'warn');
  assert.equal(lv('fatal'), 'error');
  assert.equal(lv('panic'), 'error');
});

test('kubeconfig_path falls back to the first $KUBECONFIG entry', () => {
  assert.equal(
    loadSnapshotterConfig({}, { KUBECONFIG: ':/a/kube:/b/kube' }).config.remote.auth.kubeconfigPath,
    '/a/kube',
  );
  assert.equal(loadSnapshotterConfig({}, {}).config.remote.auth.kubeconfigPath, '');
  assert.equal(
    load('version = 1\n[remote.auth]\nkubeconfig_path = "/k"\n', {}, { KUBECONFIG: '/a' }).config.remote.auth
      .kubeconfigPath,
    '/k',
  );
});

test('unreadable or malformed files', () => {
  assert.throws(
    () => loadSnapshotterConfig({ config: join(dir, 'absent.toml') }, {}),
    (e: NydusError) =>
      e.code === 'ERR_NOT_FOUND' && /Snapshotter config ".*absent\.toml" does not exist/.test(e.message),
  );
  assert.throws(
    () => loadSnapshotterConfig({ config: dir }, {}),
    (e: NydusError) => e.code === 'ERR_IO' && /Cannot read snapshotter config/.test(e.message),
  );
  refused(
    () => load('version = 1\n[daemon\n'),
    /Invalid snapshotter config ".*": not valid TOML: line 2 column/,
  );
  refused(() => load('version = 1\nversion = 1\n'), /not valid TOML/);
});
