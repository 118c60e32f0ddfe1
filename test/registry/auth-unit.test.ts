import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorCodes, errorDetail, parseWwwAuthenticate, repositoryScope } from '../../src/registry/auth.js';
import { normalizeAuthKey } from '../../src/registry/docker-config.js';

test('WWW-Authenticate parsing: quoted commas, several challenges, odd spacing', () => {
  assert.deepEqual(
    parseWwwAuthenticate(
      'Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push",error="insufficient_scope"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'http://127.0.0.1:1/token',
          service: 'reg',
          scope: 'repository:a/b:pull,push',
          error: 'insufficient_scope',
        },
      },
    ],
  );
  assert.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [
    { scheme: 'basic', params: { realm: 'Registry Realm' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate('Basic realm="a\\"b", Bearer realm=x , service = "s"'), [
    { scheme: 'basic', params: { realm: 'a"b' } },
    { scheme: 'bearer', params: { realm: 'x', service: 's' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate(''), []);
  assert.equal(repositoryScope('a/b', 'pull'), 'repository:a/b:pull');
  assert.equal(repositoryScope('a/b', 'push'), 'repository:a/b:pull,push');
});

test('registry error bodies become short messages', () => {
  const body = JSON.stringify({
    errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown', detail: { Tag: 'x' } }],
  });
  assert.equal(errorDetail(body), ': MANIFEST_UNKNOWN: manifest unknown');
  assert.deepEqual(errorCodes(body), ['MANIFEST_UNKNOWN']);
  assert.equal(errorDetail('{"error":"invalid_grant"}'), ': invalid_grant');
  assert.equal(errorDetail('<html>\n  oops </html>'), ': <html> oops </html>');
  assert.equal(errorDetail(''), '');
});

test('Docker config keys are normalized to hosts', () => {
  assert.equal(normalizeAuthKey('https://index.docker.io/v1/'), 'index.docker.io');
  assert.equal(normalizeAuthKey('http://127.0.0.1:5000'), '127.0.0.1:5000');
  assert.equal(normalizeAuthKey('Reg.Example:443/'), 'reg.example:443');
});
