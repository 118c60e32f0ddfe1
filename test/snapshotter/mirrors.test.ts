import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { NydusError } from '../../src/errors/errors.js';
import { mirrorsFor, pickMirror, type Mirror } from '../../src/snapshotter/mirrors.js';
import { freePort } from '../helpers/registry.js';

/**
 * Mirrors from containerd-style hosts.toml files (upstream-surface §7.9) and the choice among
 * them by `ping_url`, against real HTTP servers on 127.0.0.1.
 */

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'mirrors-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function hostsToml(dir: string, name: string, text: string): void {
  mkdirSync(join(dir, name), { recursive: true });
  writeFileSync(join(dir, name, 'hosts.toml'), text);
}

const hostsOf = (dir: string, host: string): string[] => mirrorsFor(dir, host).map((m) => m.host);

test('hosts.toml: the directory of the host wins over _default, which serves every other host', (t) => {
  const dir = tempDir(t);
  hostsToml(dir, '_default', '[host."http://127.0.0.1:7000"]\n');
  assert.deepEqual(hostsOf(dir, '127.0.0.1:5000'), ['127.0.0.1:7000']);
  hostsToml(dir, '127.0.0.1:5000', '[host."http://127.0.0.1:7002"]\n');
  assert.deepEqual(hostsOf(dir, '127.0.0.1:5000'), ['127.0.0.1:7002']);
  assert.deepEqual(hostsOf(dir, '127.0.0.1:5001'), ['127.0.0.1:7000']);
  // docker.io images look in "docker.io" (the host of a parsed reference).
  hostsToml(dir, 'docker.io', '[host."https://127.0.0.1:7003"]\n');
  assert.deepEqual(hostsOf(dir, 'docker.io'), ['127.0.0.1:7003']);
});

/**
 * The directory names of containerd's hosts.toml layout, as containerd and the upstream Nydus
 * snapshotter look them up (remotes/docker/config: hostPaths with hostDirectory; the
 * snapshotter's daemonconfig/mirrors.go copies them): for a host with a port, first
 * "<host>_<port>_" (':port' becomes '_port_', trailing underscore included), then the host as
 * given, then "_default".
 */
test('hosts.toml: a host with a port is looked up as "<host>_<port>_" first, as containerd does', (t) => {
  const dir = tempDir(t);
  hostsToml(dir, '_default', '[host."http://127.0.0.1:7000"]\n');
  hostsToml(dir, '127.0.0.1_5000_', '[host."http://127.0.0.1:7001"]\n');
  assert.deepEqual(hostsOf(dir, '127.0.0.1:5000'), ['127.0.0.1:7001']);
  hostsToml(dir, '127.0.0.1:5000', '[host."http://127.0.0.1:7002"]\n');
  assert.deepEqual(hostsOf(dir, '127.0.0.1:5000'), ['127.0.0.1:7001']);
});

/** containerd resolves a relative `ca` path against the host directory (makeAbsPath). */
test('hosts.toml: a relative ca path is relative to the directory of the hosts.toml', (t) => {
  const dir = tempDir(t);
  hostsToml(
    dir,
    '127.0.0.1:5000',
    '[host."https://127.0.0.1:7010"]\n  ca = "mirror-ca.crt"\n[host."https://127.0.0.1:7011"]\n  ca = ["certs/a.crt", "/abs/b.crt"]\n',
  );
  assert.deepEqual(
    mirrorsFor(dir, '127.0.0.1:5000').map((m) => m.caFiles),
    [
      [join(dir, '127.0.0.1:5000', 'mirror-ca.crt')],
      [join(dir, '127.0.0.1:5000', 'certs', 'a.crt'), '/abs/b.crt'],
    ],
  );
});

test('hosts.toml: no file, or a file without [host] tables, means no mirrors', (t) => {
  const dir = tempDir(t);
  assert.deepEqual(mirrorsFor(dir, '127.0.0.1:5000'), []);
  assert.deepEqual(mirrorsFor(join(dir, 'absent'), '127.0.0.1:5000'), []);
  hostsToml(dir, '127.0.0.1:5000', 'server = "https://127.0.0.1:5000"\n');
  assert.deepEqual(mirrorsFor(dir, '127.0.0.1:5000'), []);
});

test('hosts.toml: mirrors in file order with scheme, ca (string or list), skip_verify, ping_url', (t) => {
  const dir = tempDir(t);
  hostsToml(
    dir,
    '127.0.0.1:5000',
    `server = "https://127.0.0.1:5000"

[host."http://127.0.0.1:7010"]
  capabilities = ["pull", "resolve"]
  ping_url = "http://127.0.0.1:7010/v2/"

[host."https://127.0.0.1:7011"]
  ca = "/etc/certs/one.crt"
  skip_verify = false

[host."https://127.0.0.1:7012"]
  capabilities = ["resolve", "push"]

[host."127.0.0.1:7013"]
  capabilities = ["pull"]
  ca = ["/etc/certs/a.crt", "/etc/certs/b.crt"]
  skip_verify = true
  ping_url = ""
`,
  );
  const want: Mirror[] = [
    { scheme: 'http', host: '127.0.0.1:7010', caFiles: [], pingUrl: 'http://127.0.0.1:7010/v2/' },
    { scheme: 'https', host: '127.0.0.1:7011', caFiles: ['/etc/certs/one.crt'], skipVerify: false },
    // (7012 cannot pull: skipped)
    {
      scheme: 'https',
      host: '127.0.0.1:7013',
      caFiles: ['/etc/certs/a.crt', '/etc/certs/b.crt'],
      skipVerify: true,
    },
  ];
  assert.deepEqual(mirrorsFor(dir, '127.0.0.1:5000'), want);
});

test('hosts.toml: invalid TOML and an invalid mirror URL are ERR_INVALID_ARG naming the file', (t) => {
  const dir = tempDir(t);
  for (const [host, text, want] of [
    ['127.0.0.1:5000', '[host."http://x\n', /Cannot read mirrors config/],
    ['127.0.0.1:5001', '[host."http://[::1"]\n', /is not a URL/],
  ] as const) {
    hostsToml(dir, host, text);
    assert.throws(
      () => mirrorsFor(dir, host),
      (e: unknown) =>
        e instanceof NydusError &&
        e.code === 'ERR_INVALID_ARG' &&
        want.test(e.message) &&
        e.message.includes(join(dir, host, 'hosts.toml')),
    );
  }
});

interface PingServer {
  url: string;
  hits: number;
}

/** An HTTP server on 127.0.0.1: answers `status`, or (status 0) accepts and never answers. */
async function pingServer(t: TestContext, status: number): Promise<PingServer> {
  const state = { url: '', hits: 0 };
  const srv: Server = createServer((req, res) => {
    state.hits++;
    if (status === 0) return; // hold the request open
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(`status ${status} for ${req.url ?? ''}`);
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  t.after(async () => {
    srv.closeAllConnections();
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  });
  state.url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/v2/`;
  return state;
}

const mirror = (n: number, pingUrl?: string): Mirror => ({
  scheme: 'http',
  host: `127.0.0.1:${7100 + n}`,
  caFiles: [],
  ...(pingUrl !== undefined ? { pingUrl } : {}),
});

test('pickMirror: the first mirror whose ping_url answers 2xx', async (t) => {
  const bad = await pingServer(t, 500);
  const notFound = await pingServer(t, 404);
  const good = await pingServer(t, 200);
  const noContent = await pingServer(t, 204);
  const ms = [mirror(1, bad.url), mirror(2, notFound.url), mirror(3, good.url), mirror(4, noContent.url)];
  assert.equal(await pickMirror(ms), ms[2]);
  assert.deepEqual([bad.hits, notFound.hits, good.hits, noContent.hits], [1, 1, 1, 0]);
  // 204 is 2xx too.
  assert.equal(await pickMirror([ms[0]!, ms[3]!]), ms[3]);
});

test('pickMirror: a mirror without ping_url is picked at once, later ones are not pinged', async (t) => {
  const bad = await pingServer(t, 500);
  const good = await pingServer(t, 200);
  const ms = [mirror(1, bad.url), mirror(2), mirror(3, good.url)];
  assert.equal(await pickMirror(ms), ms[1]);
  assert.equal(good.hits, 0);
  assert.equal(await pickMirror([]), undefined);
});

test('pickMirror: none usable (5xx, closed port) gives undefined', async (t) => {
  const bad = await pingServer(t, 503);
  const closed = `http://127.0.0.1:${await freePort()}/v2/`;
  assert.equal(await pickMirror([mirror(1, bad.url), mirror(2, closed), mirror(3, 'not a url')]), undefined);
});

test('pickMirror: a ping that never answers gives up within about 3 s', async (t) => {
  const silent = await pingServer(t, 0);
  const good = await pingServer(t, 200);
  const ms = [mirror(1, silent.url), mirror(2, good.url)];
  let start = Date.now();
  assert.equal(await pickMirror(ms), ms[1]);
  let took = Date.now() - start;
  assert.ok(took >= 2_500 && took < 5_000, `took ${took} ms`);
  assert.equal(silent.hits, 1);

  start = Date.now();
  assert.equal(await pickMirror([ms[0]!]), undefined);
  took = Date.now() - start;
  assert.ok(took >= 2_500 && took < 5_000, `took ${took} ms`);
});
