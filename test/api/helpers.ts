import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import type { TestContext } from 'node:test';
import { Agent, request } from 'undici';
import { IN_CI } from '../helpers/fixtures.js';

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

const agents = new Map<string, Agent>();

function agentFor(sock: string): Agent {
  let a = agents.get(sock);
  if (a === undefined) {
    a = new Agent({ connect: { socketPath: sock } });
    agents.set(sock, a);
  }
  return a;
}

/** Close the connection pools opened by http(). */
export async function closeAgents(): Promise<void> {
  await Promise.all([...agents.values()].map((a) => a.close()));
  agents.clear();
}

/** One request over the API socket through undici. */
export async function http(
  sock: string,
  method: 'GET' | 'PUT' | 'POST' | 'DELETE' | 'PATCH' | 'HEAD',
  path: string,
  body?: string | Buffer,
): Promise<HttpResult> {
  const res = await request(`http://localhost${path}`, {
    method,
    dispatcher: agentFor(sock),
    ...(body !== undefined && { body, headers: { 'content-type': 'application/json' } }),
  });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : (JSON.parse(text) as unknown);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** Every answer carries upstream's two headers. */
export function assertApiHeaders(r: HttpResult): void {
  assert.equal(r.headers['content-type'], 'application/json');
  assert.equal(r.headers['server'], 'Nydus API');
}

/** A 4xx/5xx answer: status, headers, upstream's error body, the message matching `message`. */
export function assertApiError(r: HttpResult, status: number, message: RegExp | string): void {
  assert.equal(r.status, status, r.text);
  assertApiHeaders(r);
  const body = r.json as { code?: unknown; message?: unknown };
  assert.deepEqual(Object.keys(body), ['code', 'message']);
  assert.equal(body.code, 'UNDEFINED');
  assert.equal(typeof body.message, 'string');
  if (typeof message === 'string') assert.equal(body.message, message);
  else assert.match(body.message as string, message);
  assert.doesNotMatch(body.message as string, /\n\s+at /, 'no stack trace');
}

/** Send raw bytes on a new connection and collect everything the server writes back. */
export function rawExchange(sock: string, data: string | Buffer, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: sock });
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(out);
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      out += d;
    });
    s.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      if (out !== '') resolve(out);
      else reject(e);
    });
    s.write(data);
  });
}

function findCurl(): string | undefined {
  for (const p of ['/usr/bin/curl', '/bin/curl', '/usr/local/bin/curl']) if (existsSync(p)) return p;
  return undefined;
}

export const CURL = findCurl();

/** curl is used to check the API the way the README drives it. Missing curl: a loud skip (a failure in CI). */
export function needCurl(t: TestContext): string | undefined {
  if (CURL !== undefined) return CURL;
  const why = 'curl is not installed';
  if (IN_CI) throw new Error(`${why}; under CI=true this is a failure`);
  process.stderr.write(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(why);
  return undefined;
}

/** Run curl; `-i` output split into status, headers and body. */
export function curl(
  curlPath: string,
  args: readonly string[],
): Promise<{ status: number; headers: Map<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      curlPath,
      ['-s', '-S', '-i', ...args],
      { encoding: 'utf8', timeout: 20000 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`curl failed: ${err.message} ${stderr}`));
          return;
        }
        // Skip interim answers (100 Continue).
        let text = stdout;
        while (/^HTTP\/1\.[01] 100/.test(text)) text = text.slice(text.indexOf('\r\n\r\n') + 4);
        const split = text.indexOf('\r\n\r\n');
        const head = text.slice(0, split).split('\r\n');
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? NaN);
        const headers = new Map<string, string>();
        for (const line of head.slice(1)) {
          const i = line.indexOf(':');
          headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
        }
        resolve({ status, headers, body: text.slice(split + 4) });
      },
    );
  });
}
