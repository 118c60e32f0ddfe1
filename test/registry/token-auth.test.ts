import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { isNydusError } from '../../src/errors/errors.js';
import type { RegistryClient, RegistryOptions } from '../../src/registry/client.js';
import {
  haveRegistry,
  needRegistry,
  sha256Digest,
  startRegistry,
  type TestRegistry,
  withClient as withRegistryClient,
} from '../helpers/registry.js';

let reg: TestRegistry;

before(async () => {
  if (haveRegistry()) reg = await startRegistry({ token: { user: 'bob', pass: 'tok-pass' } });
});

after(async () => {
  await reg?.stop();
});

function issuer() {
  return reg.tokenIssuer!;
}

/** A client of the token registry, with the issuer's credentials unless `opts` says otherwise. */
function withClient<T>(opts: RegistryOptions, fn: (c: RegistryClient) => Promise<T>): Promise<T> {
  return withRegistryClient(reg, { credentials: { username: reg.user!, password: reg.pass! }, ...opts }, fn);
}

const blob = randomBytes(10_000);
const digest = sha256Digest(blob);

test('Bearer tokens: push and pull work, tokens are reused per scope', async (t) => {
  if (!needRegistry(t)) return;
  await withClient({}, async (c) => {
    const before = issuer().issued;
    const repo = c.repository('tok/app');
    assert.equal(await repo.pushBlob(digest, blob.length, blob), 'uploaded');
    const afterPush = issuer().issued;
    assert.equal(afterPush - before, 1, 'one pull,push token for the whole push');
    assert.deepEqual(await repo.fetchBlob(digest), blob);
    assert.deepEqual(await repo.readBlobRange(digest, 10, 100), blob.subarray(10, 110));
    assert.equal(await repo.headBlob(digest), blob.length);
    assert.equal(issuer().issued - afterPush, 1, 'one pull token for all reads');
    assert.equal(c.tokensFetched, 2);
    assert.ok(issuer().posts >= 2, 'the token POST is tried first');
    // Mount needs pull on the source too: another scope set, another token.
    assert.equal(
      await c.repository('tok/other').pushBlob(digest, blob.length, blob, { mountFrom: 'tok/app' }),
      'mounted',
    );
    assert.equal(c.tokensFetched, 3);
  });
});

test('Bearer tokens: GET with Basic is the fallback when the token POST is refused', async (t) => {
  if (!needRegistry(t)) return;
  issuer().refusePost = true;
  try {
    const gets = issuer().gets;
    await withClient({}, async (c) => {
      assert.equal(await c.repository('tok/app').headBlob(digest), blob.length);
    });
    assert.equal(issuer().gets, gets + 1);
  } finally {
    issuer().refusePost = false;
  }
});

test('Bearer tokens: an expired token is refreshed; a refused one is dropped and fetched again', async (t) => {
  if (!needRegistry(t)) return;
  issuer().expiresIn = 1;
  try {
    await withClient({}, async (c) => {
      const repo = c.repository('tok/app');
      assert.equal(await repo.headBlob(digest), blob.length);
      assert.equal(c.tokensFetched, 1);
      await sleep(1100);
      assert.equal(await repo.headBlob(digest), blob.length);
      assert.equal(c.tokensFetched, 2, 'the token expired and was refreshed');
    });
  } finally {
    issuer().expiresIn = 300;
  }
  await withClient({}, async (c) => {
    const repo = c.repository('tok/app');
    assert.equal(await repo.headBlob(digest), blob.length);
    // The next token is one the registry refuses although the issuer says it lives long.
    issuer().expiredNext = 1;
    await sleep(1); // the cached token still lives: nothing is fetched
    assert.equal(await repo.headBlob(digest), blob.length);
    assert.equal(c.tokensFetched, 1);
    const fresh = c.repository('tok/fresh-scope');
    assert.equal(await fresh.headBlob(digest), undefined); // 401 with the bad token, then a good one
    assert.equal(c.tokensFetched, 3);
    assert.equal(issuer().expiredNext, 0);
  });
});

test('Bearer tokens: wrong password is ERR_AUTH; setCredentials hot-updates', async (t) => {
  if (!needRegistry(t)) return;
  await withClient({ credentials: { username: 'bob', password: 'not-it' } }, async (c) => {
    const repo = c.repository('tok/app');
    await assert.rejects(
      repo.headBlob(digest),
      (e: unknown) =>
        isNydusError(e) &&
        e.code === 'ERR_AUTH' &&
        e.message.includes('"bob"') &&
        e.message.includes('token server') &&
        !e.message.includes('not-it'),
    );
    c.setCredentials({ username: 'bob', password: 'tok-pass' });
    assert.equal(await repo.headBlob(digest), blob.length);
    // The server's password changes; the old token still works until new credentials drop it.
    issuer().pass = 'rotated';
    try {
      assert.equal(await repo.headBlob(digest), blob.length);
      const fetched = c.tokensFetched;
      c.setCredentials({ username: 'bob', password: 'rotated' });
      assert.equal(await repo.headBlob(digest), blob.length);
      assert.equal(c.tokensFetched, fetched + 1, 'cached tokens were dropped');
      c.setCredentials({ username: 'bob', password: 'tok-pass' });
      await assert.rejects(repo.headBlob(digest), (e: unknown) => isNydusError(e) && e.code === 'ERR_AUTH');
    } finally {
      issuer().pass = 'tok-pass';
    }
  });
  await withClient({ credentials: undefined }, async (c) => {
    await assert.rejects(
      c.repository('tok/app').headBlob(digest),
      (e: unknown) => isNydusError(e) && e.code === 'ERR_AUTH',
    );
  });
});

async function tokenFromIssuer(scope: string): Promise<{ token: string; refresh_token: string }> {
  const res = await request(issuer().url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'password',
      username: 'bob',
      password: 'tok-pass',
      service: issuer().service,
      scope,
    }).toString(),
  });
  assert.equal(res.statusCode, 200);
  return (await res.body.json()) as { token: string; refresh_token: string };
}

test('registryToken is used as it is; identity tokens use the refresh_token grant', async (t) => {
  if (!needRegistry(t)) return;
  const { token, refresh_token } = await tokenFromIssuer('repository:tok/app:pull');
  await withClient({ credentials: undefined, registryToken: token }, async (c) => {
    c.setCredentials(undefined);
    assert.equal(await c.repository('tok/app').headBlob(digest), blob.length);
    assert.equal(c.tokensFetched, 0);
  });
  // A registry token the registry refuses: the client authenticates with its credentials.
  await withClient({ registryToken: 'garbage' }, async (c) => {
    assert.equal(await c.repository('tok/app').headBlob(digest), blob.length);
    assert.equal(c.tokensFetched, 1);
  });
  await withClient({ credentials: { identityToken: refresh_token } }, async (c) => {
    assert.equal(await c.repository('tok/app').headBlob(digest), blob.length);
    assert.equal(c.tokensFetched, 1);
  });
});
