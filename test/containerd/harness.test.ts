import { test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import {
  CRI_NAMESPACE,
  mountsUnder,
  needContainerd,
  pidAlive,
  pushPauseImage,
  shimsOf,
  startContainerd,
  type Containerd,
} from '../helpers/containerd.js';
import {
  CriError,
  containerConfig,
  criClient,
  parseCriLog,
  podConfig,
  type CriClient,
} from '../helpers/cri.js';
import { makeBusyboxLayout, pushLayout } from '../helpers/oci-images.js';
import { needRegistry, startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * The containerd harness itself, with containerd's own overlayfs snapshotter (no Nydus): one
 * registry with htpasswd auth and one containerd with the CRI plugin serve every test of this
 * file. ctr pulls over plain HTTP and runs a container; the CRI path pulls with credentials
 * given in PullImage only, runs a host-network pod on the pause image from the same registry,
 * runs a container and reads its CRI log; stop() leaves no process, shim, mount or dir behind.
 */

const USER = 'harness-user';
const PASS = 'harness-pass';

interface Env {
  reg: TestRegistry;
  ctd: Containerd;
  cri: CriClient;
  busybox: string;
  /** Digest of the busybox manifest. */
  busyboxDigest: string;
  pause: string;
  logRoot: string;
}

let setup: Promise<Env> | undefined;
let env: Env | undefined;

async function start(): Promise<Env> {
  const reg = await startRegistry({ htpasswd: { user: USER, pass: PASS } });
  try {
    const creds = `${USER}:${PASS}`;
    const layout = await makeBusyboxLayout();
    const pushed = await pushLayout(layout.dir, layout.tag, reg.host, 'harness/busybox:1', { creds });
    const pause = (await pushPauseImage(reg.host, 'harness/pause:1', { creds })).ref;
    const ctd = await startContainerd({ cri: { sandboxImage: pause, plainHttpRegistries: [reg.host] } });
    const logRoot = mkdtempSync(join(tmpdir(), 'nydus-cri-logs-'));
    env = {
      reg,
      ctd,
      cri: criClient(ctd.sock),
      busybox: pushed.ref,
      busyboxDigest: pushed.digest,
      pause,
      logRoot,
    };
    return env;
  } catch (e) {
    await reg.stop();
    throw e;
  }
}

/** The shared registry and containerd, started by the first test that gets here. */
async function harness(t: TestContext): Promise<Env | undefined> {
  if (!needContainerd(t) || !needRegistry(t)) return undefined;
  setup ??= start();
  return setup;
}

after(async () => {
  if (env === undefined) return;
  env.cri.close();
  await env.ctd.stop();
  await env.reg.stop();
  rmSync(env.logRoot, { recursive: true, force: true });
});

test('containerd answers on its private socket with the CRI plugin loaded', async (t) => {
  const e = await harness(t);
  if (e === undefined) return;
  const v = await e.ctd.ctr(['version']);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /Server:[\s\S]*Version:\s+1\./);
  const plugins = await e.ctd.ctr(['plugins', 'ls']);
  assert.match(plugins.stdout, /io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);
  const cv = await e.cri.version();
  assert.equal(cv.runtime_name, 'containerd');
  assert.equal(cv.runtime_api_version, 'v1');
});

test('ctr pulls over plain HTTP with credentials and `ctr run --rm` prints from busybox', async (t) => {
  const e = await harness(t);
  if (e === undefined) return;
  const { ctd } = e;
  const denied = await ctd.ctr(['image', 'pull', '--plain-http', e.busybox]);
  assert.notEqual(denied.code, 0, 'a pull without credentials must fail');

  const pull = await ctd.ctr(['image', 'pull', '--plain-http', '-u', `${USER}:${PASS}`, e.busybox], {
    timeoutMs: 120_000,
  });
  assert.equal(pull.code, 0, pull.stderr);
  const images = await ctd.ctr(['image', 'ls', '-q']);
  assert.ok(images.stdout.split('\n').includes(e.busybox), images.stdout);
  const check = await ctd.ctr(['image', 'check']);
  assert.match(check.stdout, /complete/);

  const digests = await ctd.contentDigests(ctd.namespace);
  assert.ok(digests.length >= 3, `manifest, config and a layer in the content store: ${digests.join(' ')}`);
  assert.ok(digests.every((d) => /^sha256:[0-9a-f]{64}$/.test(d)));

  const run = await ctd.ctr(['run', '--rm', e.busybox, 'harness-run', '/bin/echo', 'hello from busybox'], {
    timeoutMs: 60_000,
  });
  assert.equal(run.code, 0, `${run.stderr}\n${ctd.log().slice(-2000)}`);
  assert.equal(run.stdout.replace(/\r/g, ''), 'hello from busybox\n');

  // --rm removed the container, its snapshot and its rootfs mount.
  assert.equal((await ctd.ctr(['containers', 'ls', '-q'])).stdout.trim(), '');
  assert.equal((await ctd.ctr(['tasks', 'ls', '-q'])).stdout.trim(), '');
  assert.deepEqual(
    mountsUnder(ctd.dir).filter((m) => m.includes('harness-run')),
    [],
  );
});

test('CRI: PullImage with credentials, a host-network pod on the local pause image, a container whose output is in the CRI log', async (t) => {
  const e = await harness(t);
  if (e === undefined) return;
  const { cri } = e;

  await assert.rejects(cri.pullImage(e.busybox), (err: unknown) => {
    assert.ok(err instanceof CriError, String(err));
    assert.notEqual(err.code, grpc.status.OK);
    assert.match(err.details, /401|unauthorized|authoriz/i);
    return true;
  });

  const auth = { username: USER, password: PASS };
  const pauseRef = await cri.pullImage(e.pause, auth);
  assert.match(pauseRef, /^sha256:[0-9a-f]{64}$/);
  // `auth` (base64 user:password) works as well as username and password.
  const busyboxRef = await cri.pullImage(e.busybox, {
    auth: Buffer.from(`${USER}:${PASS}`).toString('base64'),
  });
  assert.match(busyboxRef, /^sha256:[0-9a-f]{64}$/);
  const status = await cri.imageStatus(e.busybox);
  assert.ok(status !== null);
  assert.equal(status.id, busyboxRef);
  assert.ok(status.repo_tags.includes(e.busybox), status.repo_tags.join(' '));
  assert.ok(Number(status.size) > 0);
  assert.ok((await cri.listImages()).some((i) => i.id === pauseRef));
  // CRI images live in containerd's k8s.io namespace, with their content.
  const criContent = await e.ctd.contentDigests(CRI_NAMESPACE);
  assert.ok(criContent.length >= 5, criContent.join(' '));

  const logDir = join(e.logRoot, 'pod1');
  const sandbox = podConfig({ name: 'harness-pod', logDirectory: logDir });
  const podId = await cri.runPodSandbox(sandbox);
  t.after(async () => {
    await cri.stopPodSandbox(podId).catch(() => undefined);
    await cri.removePodSandbox(podId).catch(() => undefined);
  });
  const pod = await cri.podSandboxStatus(podId);
  assert.equal(pod.state, 'SANDBOX_READY');
  assert.equal(pod.metadata?.name, 'harness-pod');

  const ctrId = await cri.createContainer(
    podId,
    containerConfig({
      name: 'echo',
      image: e.busybox,
      command: ['/bin/sh', '-c'],
      args: ['echo hi; echo oops >&2'],
      logPath: 'echo/0.log',
    }),
    sandbox,
  );
  assert.equal((await cri.containerStatus(ctrId)).state, 'CONTAINER_CREATED');
  await cri.startContainer(ctrId);
  const done = await cri.waitExited(ctrId, 30_000);
  assert.equal(done.exit_code, 0, `${done.reason} ${done.message}`);
  // containerd 1.6 reports the repo digest here (later versions the image id).
  assert.ok(
    [busyboxRef, `${e.reg.host}/harness/busybox@${e.busyboxDigest}`].includes(done.image_ref),
    done.image_ref,
  );
  assert.equal(done.log_path, join(logDir, 'echo/0.log'));

  // The shim writes the log as the output arrives; it is complete soon after the exit.
  const logFile = join(logDir, 'echo', '0.log');
  let lines = existsSync(logFile) ? parseCriLog(readFileSync(logFile, 'utf8')) : [];
  for (const deadline = Date.now() + 5000; lines.length < 2 && Date.now() < deadline;) {
    await sleep(50);
    lines = existsSync(logFile) ? parseCriLog(readFileSync(logFile, 'utf8')) : [];
  }
  assert.deepEqual(lines.map((l) => [l.stream, l.tag, l.text]).sort(), [
    ['stderr', 'F', 'oops'],
    ['stdout', 'F', 'hi'],
  ]);
  for (const l of lines) assert.ok(!Number.isNaN(Date.parse(l.time)), l.time);

  await cri.removeContainer(ctrId);
  assert.deepEqual(await cri.listContainers({ pod_sandbox_id: podId }), []);
  await cri.stopPodSandbox(podId);
  await cri.removePodSandbox(podId);
  assert.deepEqual(await cri.listPodSandbox(), []);

  await cri.removeImage(e.busybox);
  assert.equal(await cri.imageStatus(e.busybox), null);
});

test('CRI: ExecSync in a running container, StopContainer stops it', async (t) => {
  const e = await harness(t);
  if (e === undefined) return;
  const { cri } = e;
  const auth = { username: USER, password: PASS };
  await cri.pullImage(e.pause, auth);
  await cri.pullImage(e.busybox, auth);
  const sandbox = podConfig({ name: 'harness-exec', logDirectory: join(e.logRoot, 'pod2') });
  const podId = await cri.runPodSandbox(sandbox);
  t.after(async () => {
    await cri.stopPodSandbox(podId).catch(() => undefined);
    await cri.removePodSandbox(podId).catch(() => undefined);
  });
  const ctrId = await cri.createContainer(
    podId,
    containerConfig({ name: 'sleeper', image: e.busybox, command: ['/bin/sleep', '3600'] }),
    sandbox,
  );
  await cri.startContainer(ctrId);
  assert.equal((await cri.containerStatus(ctrId)).state, 'CONTAINER_RUNNING');
  const r = await cri.execSync(ctrId, ['/bin/cat', '/etc/passwd']);
  assert.equal(r.exitCode, 0, r.stderr);
  assert.match(r.stdout, /^root:x:0:0:/);
  await cri.stopContainer(ctrId, 0);
  const s = await cri.waitExited(ctrId, 10_000);
  assert.notEqual(s.exit_code, 0, 'killed by a signal');
  await cri.removeContainer(ctrId);
});

test('stop() kills running tasks and pods and leaves no containerd, shim, mount or dir', async (t) => {
  const e = await harness(t);
  if (e === undefined) return;
  const { ctd, cri } = e;
  // Leave work running: a detached ctr task and a CRI pod with a running container.
  const pull = await ctd.ctr(['image', 'pull', '--plain-http', '-u', `${USER}:${PASS}`, e.busybox]);
  assert.equal(pull.code, 0, pull.stderr);
  const run = await ctd.ctr(['run', '-d', e.busybox, 'left-running', '/bin/sleep', '3600']);
  assert.equal(run.code, 0, run.stderr);
  const auth = { username: USER, password: PASS };
  await cri.pullImage(e.pause, auth);
  await cri.pullImage(e.busybox, auth);
  const sandbox = podConfig({ name: 'left-pod', logDirectory: join(e.logRoot, 'pod3') });
  const podId = await cri.runPodSandbox(sandbox);
  const ctrId = await cri.createContainer(
    podId,
    containerConfig({ name: 'sleeper', image: e.busybox, command: ['/bin/sleep', '3600'] }),
    sandbox,
  );
  await cri.startContainer(ctrId);
  const tasks = await ctd.ctr(['tasks', 'ls']);
  const taskPid = /^left-running\s+(\d+)\s+RUNNING/m.exec(tasks.stdout);
  assert.ok(taskPid !== null, tasks.stdout);
  const criTasks = await ctd.ctr(['tasks', 'ls'], { namespace: CRI_NAMESPACE });
  const workload = [
    taskPid[1]!,
    ...[...criTasks.stdout.matchAll(/^\S+\s+(\d+)\s+RUNNING/gm)].map((m) => m[1]!),
  ].map(Number);
  assert.equal(workload.length, 3, `the ctr task, the pause and the sleeper: ${criTasks.stdout}`);
  assert.ok(workload.every(pidAlive));
  const shims = shimsOf(ctd.sock);
  assert.ok(shims.length >= 2, `a shim for the ctr task and one for the pod: ${shims.join(' ')}`);
  assert.ok(mountsUnder(ctd.dir).length >= 2, 'rootfs mounts of the running containers');

  cri.close();
  await ctd.stop();
  env = undefined;
  await e.reg.stop();
  rmSync(e.logRoot, { recursive: true, force: true });

  assert.deepEqual(mountsUnder(ctd.dir), []);
  assert.ok(!pidAlive(ctd.pid), 'containerd exited');
  assert.deepEqual(shimsOf(ctd.sock), []);
  for (const pid of [...shims, ...workload]) assert.ok(!pidAlive(pid), `process ${pid} is gone`);
  assert.ok(!existsSync(ctd.dir), 'the temp dir is removed');
});
