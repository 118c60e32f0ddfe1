import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { ApiError } from '../../src/daemon/api/control.js';
import { jsonText, repairBareKeys } from '../../src/daemon/api/body.js';
import { startApiServer } from '../../src/daemon/api/server.js';
import { createLogger } from '../../src/log/logger.js';
import {
  BACKEND_METRICS,
  BLOBCACHE_METRICS,
  DAEMON_INFO,
  FS_METRICS,
  FakeControl,
  quietLogger,
  startFake,
  tempDir,
  type Running,
} from './fake-control.js';
import {
  assertApiError,
  assertApiHeaders,
  closeAgents,
  curl,
  http,
  needCurl,
  rawExchange,
  type HttpResult,
} from './helpers.js';

after(closeAgents);

/** Run `body` against a fresh server; always stops it. */
async function withServer(body: (r: Running) => Promise<void>): Promise<void> {
  const r = await startFake();
  try {
    await body(r);
  } finally {
    await r.stop();
  }
}

function assertNoContent(r: HttpResult): void {
  assert.equal(r.status, 204, r.text);
  assertApiHeaders(r);
  assert.equal(r.text, '');
}

function assertOk(r: HttpResult, expected: unknown): void {
  assert.equal(r.status, 200, r.text);
  assertApiHeaders(r);
  assert.deepEqual(r.json, expected);
}

const MOUNT_BODY = {
  source: '/images/a.boot',
  fs_type: 'rafs',
  config: '{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/blobs"}}}',
  prefetch_files: ['/etc/hosts', '/bin'],
};

describe('daemon routes', () => {
  test('GET /api/v1/daemon answers the daemon info; v2 leaves out backend_collection', async () => {
    await withServer(async ({ sock, control }) => {
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
      const v2: Record<string, unknown> = { ...DAEMON_INFO };
      delete v2['backend_collection'];
      assertOk(await http(sock, 'GET', '/api/v2/daemon'), v2);
      assert.equal(control.callsOf('daemonInfo').length, 2);
    });
  });

  test('PUT /api/v1/daemon and /api/v2/daemon set the log level (204); a bad level is the control 400', async () => {
    await withServer(async ({ sock, control }) => {
      assertNoContent(await http(sock, 'PUT', '/api/v1/daemon', '{"log_level":"debug"}'));
      assertNoContent(await http(sock, 'PUT', '/api/v2/daemon', '{"log_level":"trace"}'));
      assert.deepEqual(control.callsOf('setLogLevel'), [['debug'], ['trace']]);
      assertApiError(
        await http(sock, 'PUT', '/api/v1/daemon', '{"log_level":"loud"}'),
        400,
        'Configure(Unknown log level "loud")',
      );
      assertApiError(
        await http(sock, 'PUT', '/api/v1/daemon', '{"level":"info"}'),
        400,
        'ParseBody(Error("missing field `log_level`"))',
      );
      assertApiError(
        await http(sock, 'PUT', '/api/v1/daemon', '{"log_level":3}'),
        400,
        'ParseBody(Error("invalid type: integer `3`, expected a string"))',
      );
      assertApiError(
        await http(sock, 'PUT', '/api/v1/daemon', '[1]'),
        400,
        /^ParseBody\(Error\("invalid type: sequence/,
      );
      assertApiError(await http(sock, 'PUT', '/api/v1/daemon', '{"log_level":'), 400, /^ParseBody\(Error\(/);
      // PUT without a body is a bad request, as upstream's (Put, None) falls through.
      assertApiError(await http(sock, 'PUT', '/api/v1/daemon'), 400, 'BadRequest');
    });
  });

  test('GET /api/v1/daemon/events', async () => {
    await withServer(async ({ sock }) => {
      assertOk(await http(sock, 'GET', '/api/v1/daemon/events'), {
        max_errors: 0,
        total_errors: 0,
        max_size: 1048576,
        total_size: 0,
        errors: [],
      });
    });
  });

  test('GET /api/v1/daemon/backend needs ?mountpoint=; an unknown one is the control 404; bigints stay exact', async () => {
    await withServer(async ({ sock, control }) => {
      const r = await http(sock, 'GET', '/api/v1/daemon/backend?mountpoint=/');
      assert.equal(r.status, 200);
      assertApiHeaders(r);
      assert.equal(
        r.text,
        `{"version":1280,"flags":"COMPRESSION_LZ4","inodes_count":${(6n ** 30n).toString()}}`,
      );
      assertApiError(
        await http(sock, 'GET', '/api/v1/daemon/backend'),
        400,
        `QueryString("'mountpoint' should be specified in query string")`,
      );
      assertApiError(
        await http(sock, 'GET', '/api/v1/daemon/backend?mountpoint=%2Fnope'),
        404,
        'FsBackendInfo(Mountpoint "/nope" is not mounted)',
      );
      assert.deepEqual(control.callsOf('backendInfo'), [['/'], ['/nope']]);
    });
  });

  test('PUT /api/v1/daemon/start is 204; PUT /api/v1/daemon/exit answers 204 even when exit() closes the server at once', async () => {
    const r = await startFake();
    try {
      assertNoContent(await http(r.sock, 'PUT', '/api/v1/daemon/start'));
      assert.equal(r.control.callsOf('start').length, 1);
      // A real daemon tears everything down in exit(), the API server included.
      let closed: Promise<void> | undefined;
      r.control.exit = () => {
        r.control.exited++;
        closed = r.server.close();
      };
      assertNoContent(await http(r.sock, 'PUT', '/api/v1/daemon/exit'));
      assert.equal(r.control.exited, 1);
      await closed;
      assert.equal(existsSync(r.sock), false);
    } finally {
      await r.stop();
    }
  });

  test('exit() is called only after the 204 is on the wire, and a throwing exit() does not break the server', async () => {
    await withServer(async ({ sock, control }) => {
      const order: string[] = [];
      control.exit = () => {
        order.push('exit');
        throw new Error('exit failed');
      };
      const r = await http(sock, 'PUT', '/api/v1/daemon/exit');
      order.push('answer');
      assertNoContent(r);
      // exit() ran after the response was finished, possibly before the client parsed it.
      await new Promise((res) => setTimeout(res, 50));
      assert.ok(order.includes('exit'));
      assertOk(await http(sock, 'GET', '/api/v1/daemon/events'), control.events());
    });
  });

  test('fuse sendfd/takeover are 501 (no failover), wrong methods 400', async () => {
    await withServer(async ({ sock }) => {
      for (const p of ['/api/v1/daemon/fuse/sendfd', '/api/v1/daemon/fuse/takeover']) {
        assertApiError(await http(sock, 'PUT', p), 501, 'Upgrade(DaemonAbnormal(Unsupported))');
        assertApiError(await http(sock, 'GET', p), 400, 'BadRequest');
      }
    });
  });
});

describe('mount routes', () => {
  test('POST mounts (204), PUT remounts, DELETE umounts; the request is passed on as a MountRequest', async () => {
    await withServer(async ({ sock, control }) => {
      assertNoContent(await http(sock, 'POST', '/api/v1/mount?mountpoint=/a', JSON.stringify(MOUNT_BODY)));
      assert.deepEqual(control.callsOf('mount'), [
        [
          '/a',
          {
            source: MOUNT_BODY.source,
            fsType: 'rafs',
            config: MOUNT_BODY.config,
            prefetchFiles: MOUNT_BODY.prefetch_files,
          },
        ],
      ]);
      assertNoContent(
        await http(
          sock,
          'PUT',
          '/api/v1/mount?mountpoint=/a',
          JSON.stringify({ source: '/images/b.boot', fs_type: 'rafs', config: 'x = 1' }),
        ),
      );
      assert.deepEqual(control.callsOf('remount'), [
        ['/a', { source: '/images/b.boot', fsType: 'rafs', config: 'x = 1' }],
      ]);
      assertNoContent(await http(sock, 'DELETE', '/api/v1/mount?mountpoint=/a'));
      assert.deepEqual(control.callsOf('umount'), [['/a']]);
      // Nested, URL-encoded mountpoints.
      assertNoContent(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=%2Fb%2Fc', JSON.stringify(MOUNT_BODY)),
      );
      assert.ok(control.mounts.has('/b/c'));
    });
  });

  test('fs_type defaults to "" and prefetch_files may be null, as serde reads them', async () => {
    await withServer(async ({ sock, control }) => {
      assertNoContent(
        await http(
          sock,
          'POST',
          '/api/v1/mount?mountpoint=/x',
          '{"source":"/s","config":"c","prefetch_files":null}',
        ),
      );
      assert.deepEqual(control.callsOf('mount')[0], ['/x', { source: '/s', fsType: '', config: 'c' }]);
    });
  });

  test('mount errors: control 400/404 keep their status; missing query, bad bodies and methods are 400', async () => {
    await withServer(async ({ sock }) => {
      const body = JSON.stringify(MOUNT_BODY);
      assertApiError(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=/', body),
        400,
        'Mount(Mountpoint "/" is already mounted)',
      );
      assertApiError(
        await http(sock, 'DELETE', '/api/v1/mount?mountpoint=/nope'),
        404,
        'Mount(Mountpoint "/nope" is not mounted)',
      );
      assertApiError(
        await http(sock, 'PUT', '/api/v1/mount?mountpoint=/nope', body),
        404,
        'Mount(Mountpoint "/nope" is not mounted)',
      );
      const noQuery = `QueryString("'mountpoint' should be specified in query string")`;
      assertApiError(await http(sock, 'POST', '/api/v1/mount', body), 400, noQuery);
      assertApiError(await http(sock, 'DELETE', '/api/v1/mount'), 400, noQuery);
      assertApiError(await http(sock, 'GET', '/api/v1/mount'), 400, noQuery);
      assertApiError(await http(sock, 'GET', '/api/v1/mount?mountpoint=/a'), 400, 'BadRequest');
      assertApiError(await http(sock, 'POST', '/api/v1/mount?mountpoint=/a'), 400, 'BadRequest');
      assertApiError(await http(sock, 'DELETE', '/api/v1/mount?mountpoint=/a', '{}'), 400, 'BadRequest');
      assertApiError(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=/a', '{"source":"/s"}'),
        400,
        'ParseBody(Error("missing field `config`"))',
      );
      assertApiError(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=/a', '{"config":"c"}'),
        400,
        'ParseBody(Error("missing field `source`"))',
      );
      assertApiError(
        await http(
          sock,
          'POST',
          '/api/v1/mount?mountpoint=/a',
          '{"source":"/s","config":"c","prefetch_files":[1]}',
        ),
        400,
        /^ParseBody\(Error\("invalid type: integer `1`, expected a string"\)\)$/,
      );
      assertApiError(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=/a', '{not json'),
        400,
        /^ParseBody\(Error\(".+"\)\)$/,
      );
      assertApiError(await http(sock, 'POST', '/api/v1/mount?mountpoint=/a', 'null'), 400, /^ParseBody/);
    });
  });
});

describe('the legacy mount body of the README (seed 002)', () => {
  // The README's curl line: -d "{\"source\":\"<bootstrap>\",\"fstype\":\"rafs\",\"mountpoint\":\"/foo/bar\","config\":\"<config>\"}"
  // The unescaped quote before config closes the shell string, so the body lacks one opening quote.
  const defective = (source: string, config: string): string =>
    `{"source":"${source}","fstype":"rafs","mountpoint":"/foo/bar",config":"${config}"}`;

  test('the exact defective body mounts /foo/bar with the config read from the file', async () => {
    await withServer(async ({ sock, control, dir }) => {
      const cfgPath = join(dir, 'config.json');
      const cfgText =
        '{\n  "device": {"backend": {"type": "localfs", "config": {"dir": "/blobs"}}},\n  "mode": "direct"\n}\n';
      writeFileSync(cfgPath, cfgText);
      const body = defective('/images/boot', cfgPath);
      assert.throws(() => JSON.parse(body) as unknown, 'the body really is not JSON');
      assertNoContent(await http(sock, 'PUT', '/api/v1/mount', body));
      assert.deepEqual(control.callsOf('mount'), [
        ['/foo/bar', { source: '/images/boot', fsType: 'rafs', config: cfgText }],
      ]);
      // Once more with the newline an interactive shell adds when the user closes the quote.
      control.mounts.delete('/foo/bar');
      assertNoContent(await http(sock, 'PUT', '/api/v1/mount', `${body}\n`));
      assert.equal(control.callsOf('mount').length, 2);
    });
  });

  test('the well-formed legacy body works too, with config given inline', async () => {
    await withServer(async ({ sock, control }) => {
      const inline = '{"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}}}';
      assertNoContent(
        await http(
          sock,
          'PUT',
          '/api/v1/mount',
          JSON.stringify({ source: '/s', fstype: 'rafs', mountpoint: '/m', config: inline }),
        ),
      );
      assert.deepEqual(control.callsOf('mount'), [['/m', { source: '/s', fsType: 'rafs', config: inline }]]);
      const toml = 'version = 2\n[backend]\ntype = "localfs"\n';
      assertNoContent(
        await http(
          sock,
          'PUT',
          '/api/v1/mount',
          JSON.stringify({ source: '/s', mountpoint: '/t', config: toml }),
        ),
      );
      assert.deepEqual(control.callsOf('mount')[1], ['/t', { source: '/s', fsType: 'rafs', config: toml }]);
    });
  });

  test('a legacy config path that cannot be read is a 400 naming it; a body without mountpoint needs the query', async () => {
    await withServer(async ({ sock, control, dir }) => {
      const missing = join(dir, 'missing.json');
      assertApiError(
        await http(sock, 'PUT', '/api/v1/mount', defective('/s', missing)),
        400,
        new RegExp(`^Mount\\(failed to read config file "${missing}": .*ENOENT`),
      );
      assertApiError(
        await http(sock, 'PUT', '/api/v1/mount', JSON.stringify({ source: '/s', config: 'c' })),
        400,
        `QueryString("'mountpoint' should be specified in query string")`,
      );
      assert.equal(control.callsOf('mount').length, 0);
    });
  });

  test('repairBareKeys fixes only keys missing their opening quote', () => {
    assert.equal(repairBareKeys('{"a":"b",c":"d"}'), '{"a":"b","c":"d"}');
    assert.equal(repairBareKeys('{c":1, d" : 2}'), '{"c":1, "d" : 2}');
    assert.equal(repairBareKeys('{"a":"b","c":"d"}'), '{"a":"b","c":"d"}');
  });

  test('curl, as the README drives it (the defective body, through --unix-socket)', async (t) => {
    const c = needCurl(t);
    if (c === undefined) return;
    await withServer(async ({ sock, control, dir }) => {
      const cfgPath = join(dir, 'config.json');
      writeFileSync(cfgPath, '{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}}}}');
      const r = await curl(c, [
        '--unix-socket',
        sock,
        '-X',
        'PUT',
        'http://localhost/api/v1/mount',
        '-H',
        'accept: */*',
        '-H',
        'Content-Type: application/json',
        '-d',
        defective('/images/boot', cfgPath),
      ]);
      assert.equal(r.status, 204, r.body);
      assert.equal(r.headers.get('server'), 'Nydus API');
      assert.equal(r.headers.get('content-type'), 'application/json');
      assert.equal(r.body, '');
      assert.deepEqual(control.callsOf('mount')[0], [
        '/foo/bar',
        { source: '/images/boot', fsType: 'rafs', config: readFileSync(cfgPath, 'utf8') },
      ]);
    });
  });
});

describe('metrics and config routes', () => {
  test('each metrics route passes its kind, ?id= and ?latest=true', async () => {
    await withServer(async ({ sock, control }) => {
      const routes: [string, string, unknown][] = [
        ['/api/v1/metrics', 'fs', FS_METRICS],
        ['/api/v1/metrics/files', 'files', { '5': { total_fops: 2, data_read: 10 } }],
        [
          '/api/v1/metrics/pattern',
          'pattern',
          [{ ino: 5, nr_read: 1, first_access_time_secs: 1, first_access_time_nanos: 2 }],
        ],
        ['/api/v1/metrics/backend', 'backend', BACKEND_METRICS],
        ['/api/v1/metrics/blobcache', 'blobcache', BLOBCACHE_METRICS],
      ];
      const expectedCalls: unknown[][] = [];
      for (const [path, kind, expected] of routes) {
        assertOk(await http(sock, 'GET', path), expected);
        assertOk(await http(sock, 'GET', `${path}?id=/`), expected);
        expectedCalls.push([kind, undefined, false], [kind, '/', false]);
      }
      assert.deepEqual(control.callsOf('metrics'), expectedCalls);
      assertOk(await http(sock, 'GET', '/api/v1/metrics/files?latest=true'), [[1, 5], [9]]);
      assert.deepEqual(control.callsOf('metrics').at(-1), ['files', undefined, true]);
      // Like Rust's bool parse: anything but "true" is false.
      await http(sock, 'GET', '/api/v1/metrics/files?latest=1');
      assert.deepEqual(control.callsOf('metrics').at(-1), ['files', undefined, false]);
    });
  });

  test('an unknown metrics id is 404 with upstream message text (the smoke tests match Pattern(Metrics(Stats(NoCounter))))', async () => {
    await withServer(async ({ sock }) => {
      const kinds: [string, string][] = [
        ['/api/v1/metrics', 'GlobalMetrics'],
        ['/api/v1/metrics/files', 'FsFilesMetrics'],
        ['/api/v1/metrics/pattern', 'Pattern'],
        ['/api/v1/metrics/backend', 'BackendMetrics'],
        ['/api/v1/metrics/blobcache', 'BlobcacheMetrics'],
      ];
      for (const [path, kind] of kinds) {
        assertApiError(
          await http(sock, 'GET', `${path}?id=/nope`),
          404,
          `${kind}(Metrics(Stats(NoCounter)))`,
        );
      }
    });
  });

  test('GET /api/v1/metrics/inflight: 204 when idle, 200 with the list otherwise', async () => {
    await withServer(async ({ sock, control }) => {
      assertNoContent(await http(sock, 'GET', '/api/v1/metrics/inflight'));
      control.inflightOps = [{ inode: 1, opcode: 15, unique: 22656, timestamp_secs: 1612245570 }];
      assertOk(await http(sock, 'GET', '/api/v1/metrics/inflight'), control.inflightOps);
    });
  });

  test('GET/PUT /api/v1/config with and without ?id=; values must be strings; unknown keys are the control 400', async () => {
    await withServer(async ({ sock, control }) => {
      assertOk(await http(sock, 'GET', '/api/v1/config'), {});
      assertNoContent(await http(sock, 'PUT', '/api/v1/config?id=/a', '{"proxy_url":"http://p:1"}'));
      assertOk(await http(sock, 'GET', '/api/v1/config?id=/a'), { proxy_url: 'http://p:1' });
      assertNoContent(await http(sock, 'PUT', '/api/v1/config', '{"registry_auth":"dXNlcjpwYXNz"}'));
      assert.deepEqual(control.callsOf('setConfig'), [
        ['/a', { proxy_url: 'http://p:1' }],
        ['', { registry_auth: 'dXNlcjpwYXNz' }],
      ]);
      assert.deepEqual(control.callsOf('getConfig'), [[''], ['/a']]);
      assertApiError(
        await http(sock, 'PUT', '/api/v1/config', '{"color":"blue"}'),
        400,
        'Configure(Unknown config key "color")',
      );
      assertApiError(
        await http(sock, 'PUT', '/api/v1/config', '{"proxy_url":1}'),
        400,
        'ParseBody(Error("invalid type: integer `1`, expected a string"))',
      );
      assertApiError(await http(sock, 'DELETE', '/api/v1/config'), 400, 'BadRequest');
    });
  });

  test('/api/v2/blobs: no blob-cache manager, so well-formed requests are 501, malformed ones 400', async () => {
    await withServer(async ({ sock }) => {
      const entry = '{"type":"bootstrap","id":"b1","domain_id":"d","config_v2":{"version":2}}';
      assertApiError(
        await http(sock, 'PUT', '/api/v2/blobs', entry),
        501,
        'CreateBlobObject(DaemonAbnormal(Unsupported))',
      );
      assertApiError(
        await http(sock, 'GET', '/api/v2/blobs?domain_id=d'),
        501,
        'GetBlobObjects(DaemonAbnormal(Unsupported))',
      );
      assertApiError(
        await http(sock, 'DELETE', '/api/v2/blobs?domain_id=d&blob_id=b'),
        501,
        'DeleteBlobObject(DaemonAbnormal(Unsupported))',
      );
      assertApiError(
        await http(sock, 'DELETE', '/api/v2/blobs?blob_id=b'),
        501,
        'DeleteBlobFile(DaemonAbnormal(Unsupported))',
      );
      assertApiError(await http(sock, 'GET', '/api/v2/blobs'), 400, 'BadRequest');
      assertApiError(await http(sock, 'DELETE', '/api/v2/blobs'), 400, 'BadRequest');
      assertApiError(await http(sock, 'POST', '/api/v2/blobs', entry), 400, 'BadRequest');
      assertApiError(await http(sock, 'PUT', '/api/v2/blobs', '{'), 400, /^ParseBody/);
      assertApiError(await http(sock, 'PUT', '/api/v2/blobs'), 400, 'BadRequest');
    });
  });
});

describe('protocol edges', () => {
  test('unknown routes are 404 NoRoute (paths match exactly, as upstream)', async () => {
    await withServer(async ({ sock }) => {
      for (const p of [
        '/',
        '/api/v1',
        '/api/v1/daemon/',
        '/api/v3/daemon',
        '/api/v1/metrics/nope',
        '/api/v2/mount',
      ]) {
        assertApiError(await http(sock, 'GET', p), 404, 'NoRoute');
      }
      assertApiError(await http(sock, 'PUT', '/api/v1/nothing', '{}'), 404, 'NoRoute');
    });
  });

  test('wrong methods, and bodies where none belongs, are 400 BadRequest on every route', async () => {
    await withServer(async ({ sock }) => {
      const cases: ['GET' | 'PUT' | 'POST' | 'DELETE' | 'PATCH', string, string?][] = [
        ['DELETE', '/api/v1/daemon'],
        ['POST', '/api/v1/daemon', '{"log_level":"info"}'],
        ['GET', '/api/v1/daemon', '{}'],
        ['PUT', '/api/v1/daemon/events'],
        ['GET', '/api/v1/daemon/exit'],
        ['PUT', '/api/v1/daemon/exit', '{}'],
        ['POST', '/api/v1/daemon/start'],
        ['DELETE', '/api/v1/daemon/backend?mountpoint=/'],
        ['PUT', '/api/v1/metrics'],
        ['POST', '/api/v1/metrics/files'],
        ['DELETE', '/api/v1/metrics/pattern'],
        ['PUT', '/api/v1/metrics/backend', '{}'],
        ['PATCH', '/api/v1/metrics/blobcache'],
        ['PUT', '/api/v1/metrics/inflight'],
        ['POST', '/api/v1/config', '{}'],
        ['DELETE', '/api/v2/daemon'],
        ['PATCH', '/api/v1/mount?mountpoint=/a', '{}'],
      ];
      for (const [method, path, body] of cases) {
        const r = await http(sock, method, path, body);
        assertApiError(r, 400, 'BadRequest');
      }
    });
  });

  test('a body over 1 MiB is 400, and the server keeps serving', async () => {
    await withServer(async ({ sock, control }) => {
      const big = JSON.stringify({ ...MOUNT_BODY, config: 'x'.repeat(1024 * 1024) });
      assertApiError(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=/big', big),
        400,
        /^BadRequest\(request body larger than 1048576 bytes\)$/,
      );
      assert.equal(control.callsOf('mount').length, 0);
      // Just under the limit is fine.
      const fits = JSON.stringify({ ...MOUNT_BODY, config: 'y'.repeat(1024 * 1024 - 200) });
      assert.ok(Buffer.byteLength(fits) <= 1024 * 1024);
      assertNoContent(await http(sock, 'POST', '/api/v1/mount?mountpoint=/fits', fits));
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
    });
  });

  test('a body declared far too large is refused at once with Connection: close', async () => {
    await withServer(async ({ sock }) => {
      const reply = await rawExchange(
        sock,
        'PUT /api/v1/mount?mountpoint=/a HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{"source":',
      );
      assert.match(reply, /^HTTP\/1\.1 400 /);
      assert.match(reply, /\r\nconnection: close\r\n/i);
      assert.match(reply, /BadRequest\(request body larger than 1048576 bytes\)/);
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
    });
  });

  test('errors thrown by the control: ApiError keeps its status, any other error is a 500 with its message, never a stack', async () => {
    await withServer(async ({ sock, control }) => {
      control.failNext.set('daemonInfo', new ApiError(503, 'NotReady'));
      assertApiError(await http(sock, 'GET', '/api/v1/daemon'), 503, 'DaemonInfo(NotReady)');
      control.failNext.set('events', new TypeError('cannot read properties of undefined'));
      assertApiError(
        await http(sock, 'GET', '/api/v1/daemon/events'),
        500,
        'Events(cannot read properties of undefined)',
      );
      control.failNext.set('mount', new Error('bootstrap is corrupt'));
      assertApiError(
        await http(sock, 'POST', '/api/v1/mount?mountpoint=/q', JSON.stringify(MOUNT_BODY)),
        500,
        'Mount(bootstrap is corrupt)',
      );
      control.failNext.set('start', new ApiError(501, 'no fs service'));
      assertApiError(await http(sock, 'PUT', '/api/v1/daemon/start'), 501, 'Configure(no fs service)');
      control.failNext.set('metrics', 'a thrown string');
      assertApiError(await http(sock, 'GET', '/api/v1/metrics'), 500, 'GlobalMetrics(a thrown string)');
      control.failNext.set('inflight', new ApiError(501, 'Unsupported'));
      assertApiError(
        await http(sock, 'GET', '/api/v1/metrics/inflight'),
        501,
        'InflightMetrics(Unsupported)',
      );
      // An ApiError from another copy of control.js is known by its name and status.
      const foreign = Object.assign(new Error('Instance is busy'), { name: 'ApiError', status: 503 });
      control.failNext.set('getConfig', foreign);
      assertApiError(await http(sock, 'GET', '/api/v1/config'), 503, 'Configure(Instance is busy)');
      // Any 404 of a metric is upstream's NoCounter.
      control.failNext.set('metrics', new ApiError(404, 'no instance "/x"'));
      assertApiError(
        await http(sock, 'GET', '/api/v1/metrics?id=/x'),
        404,
        'GlobalMetrics(Metrics(Stats(NoCounter)))',
      );
      // Still serving.
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
    });
  });

  test('malformed HTTP gets a 400 with the API headers; the server keeps serving', async () => {
    await withServer(async ({ sock }) => {
      const reply = await rawExchange(sock, 'THIS IS NOT HTTP\r\n\r\n');
      assert.match(reply, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.match(reply, /\r\nServer: Nydus API\r\n/);
      assert.match(reply, /\r\nContent-Type: application\/json\r\n/);
      assert.ok(reply.endsWith('{"code":"UNDEFINED","message":"BadRequest"}'), reply);
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
    });
  });

  test('a client that leaves halfway through its body does not disturb the server', async () => {
    await withServer(async ({ sock, control }) => {
      for (let i = 0; i < 5; i++) {
        await new Promise<void>((resolve, reject) => {
          const s = createConnection({ path: sock }, () => {
            s.write(
              'POST /api/v1/mount?mountpoint=/half HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"sou',
            );
            setTimeout(() => {
              s.destroy();
              resolve();
            }, 20);
          });
          s.on('error', reject);
        });
      }
      assert.equal(control.callsOf('mount').length, 0);
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
    });
  });

  test('absolute-form HTTP/1.0 requests (as upstream tests send them) are routed by path', async () => {
    await withServer(async ({ sock }) => {
      const reply = await rawExchange(sock, 'GET http://localhost/api/v1/daemon/events HTTP/1.0\r\n\r\n');
      assert.match(reply, /^HTTP\/1\.[01] 200 OK\r\n/);
      assert.match(reply, /\r\nServer: Nydus API\r\n/);
      assert.ok(reply.endsWith('"errors":[]}'), reply);
    });
  });

  test('keep-alive: many requests on one connection, a slow mount does not block other requests', async () => {
    await withServer(async ({ sock, control }) => {
      let release: () => void = () => undefined;
      control.mountGate = new Promise<void>((res) => (release = res));
      const pending = http(sock, 'POST', '/api/v1/mount?mountpoint=/slow', JSON.stringify(MOUNT_BODY));
      for (let i = 0; i < 20; i++)
        assertOk(await http(sock, 'GET', '/api/v1/daemon/events'), control.events());
      release();
      assertNoContent(await pending);
    });
  });

  test('curl --unix-socket sees the headers, 200 bodies, 204s and errors', async (t) => {
    const c = needCurl(t);
    if (c === undefined) return;
    await withServer(async ({ sock }) => {
      const info = await curl(c, ['--unix-socket', sock, 'http://localhost/api/v1/daemon']);
      assert.equal(info.status, 200);
      assert.equal(info.headers.get('server'), 'Nydus API');
      assert.equal(info.headers.get('content-type'), 'application/json');
      assert.deepEqual(JSON.parse(info.body), DAEMON_INFO);
      const set = await curl(c, [
        '--unix-socket',
        sock,
        '-X',
        'PUT',
        'http://localhost/api/v1/daemon',
        '-d',
        '{"log_level":"warn"}',
      ]);
      assert.equal(set.status, 204);
      assert.equal(set.body, '');
      const nf = await curl(c, ['--unix-socket', sock, 'http://localhost/api/v1/nope']);
      assert.equal(nf.status, 404);
      assert.equal(nf.body, '{"code":"UNDEFINED","message":"NoRoute"}');
      const nc = await curl(c, ['--unix-socket', sock, 'http://localhost/api/v1/metrics/pattern?id=/x']);
      assert.equal(nc.status, 404);
      assert.match(nc.body, /Pattern\(Metrics\(Stats\(NoCounter\)\)\)/);
    });
  });
});

describe('the socket file', () => {
  test('a stale socket left by a killed process is replaced; close() removes the socket', async () => {
    const { dir, cleanup } = tempDir();
    try {
      // A process that binds the socket and dies without cleaning up.
      const code = `require('net').createServer().listen(${JSON.stringify(join(dir, 'api.sock'))}, () => process.kill(process.pid, 'SIGKILL'))`;
      execFileSync(process.execPath, ['-e', code], { stdio: 'ignore' });
    } catch {
      // killed by SIGKILL, as intended
    }
    const sock = join(dir, 'api.sock');
    try {
      assert.ok(lstatSync(sock).isSocket(), 'the stale socket is there');
      const control = new FakeControl();
      const server = await startApiServer(sock, control, quietLogger);
      assertOk(await http(sock, 'GET', '/api/v1/daemon'), DAEMON_INFO);
      await closeAgents();
      await server.close();
      assert.equal(existsSync(sock), false, 'removed at close');
      await server.close(); // twice is fine
    } finally {
      cleanup();
    }
  });

  test('a path that exists and is not a socket is refused and left alone', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'api.sock');
      writeFileSync(path, 'precious');
      await assert.rejects(
        startApiServer(path, new FakeControl(), quietLogger),
        /exists and is not a socket/,
      );
      assert.equal(readFileSync(path, 'utf8'), 'precious');
    } finally {
      cleanup();
    }
  });

  test('a socket some live process listens on is refused, and that process keeps it', async () => {
    const { dir, cleanup } = tempDir();
    const other = createServer((s) => s.on('error', () => undefined).end());
    try {
      const path = join(dir, 'api.sock');
      await new Promise<void>((res) => other.listen(path, res));
      await assert.rejects(
        startApiServer(path, new FakeControl(), quietLogger),
        /in use by another live process/,
      );
      assert.ok(lstatSync(path).isSocket());
    } finally {
      await new Promise<void>((res) => other.close(() => res()));
      cleanup();
    }
  });

  test('a socket path in a missing directory is a clear error', async () => {
    await assert.rejects(
      startApiServer('/nonexistent-dir-nydus/api.sock', new FakeControl(), quietLogger),
      /Cannot listen on API socket "\/nonexistent-dir-nydus\/api.sock"/,
    );
  });

  test('requests are logged at debug level', async () => {
    const { dir, cleanup } = tempDir();
    const logFile = join(dir, 'api.log');
    const server = await startApiServer(
      join(dir, 'api.sock'),
      new FakeControl(),
      createLogger('debug', logFile),
    );
    try {
      await http(join(dir, 'api.sock'), 'GET', '/api/v1/daemon/events');
      await closeAgents();
    } finally {
      await server.close();
    }
    const log = readFileSync(logFile, 'utf8');
    assert.match(log, /DEBUG <--- GET \/api\/v1\/daemon\/events/);
    assert.match(log, /DEBUG ---> GET Status Code: 200/);
    cleanup();
  });
});

test('jsonText writes bigints as JSON numbers and leaves look-alike strings alone', () => {
  assert.equal(jsonText({ a: 1n << 62n, b: [-3n], c: 'x' }), '{"a":4611686018427387904,"b":[-3],"c":"x"}');
  assert.equal(jsonText({ s: '\u0000bigint-1:2' }), '{"s":"\\u0000bigint-1:2"}');
  assert.equal(jsonText(undefined), 'null');
});
