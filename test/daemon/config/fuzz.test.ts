import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseDaemonConfig } from '../../../src/daemon/config/index.js';
import { prng } from '../../helpers/prng.js';

/**
 * Fuzz: whatever arrives as a config (random bytes, mutated real configs, hostile nesting), the
 * parser returns a config or throws a ConfigError (ERR_INVALID_ARG). Anything else, or a hang,
 * is a bug. Seeds are fixed so a failure reproduces.
 */

function outcome(input: string | Uint8Array): 'ok' | 'refused' {
  try {
    parseDaemonConfig(input, { source: 'fuzz' });
    return 'ok';
  } catch (e) {
    if (
      e instanceof ConfigError &&
      e.code === 'ERR_INVALID_ARG' &&
      e.message.startsWith('Invalid config fuzz: ')
    ) {
      return 'refused';
    }
    throw e;
  }
}

const REAL = [
  `{
  "device": {
    "backend": { "type": "registry", "config": { "scheme": "http", "host": "localhost:5000", "repo": "ubuntu",
      "proxy": { "url": "http://p2p:65001", "fallback": true } } },
    "cache": { "type": "blobcache", "config": { "work_dir": "/cache" } }
  },
  "mode": "direct", // comment
  "digest_validate": false,
  "fs_prefetch": { "enable": true, "threads_count": 4, "merging_size": 131072 }
}`,
  `version = 2
id = "x"
[backend]
type = "localfs"
[backend.localfs]
dir = "/tmp"
alt_dirs = ["/a", "/b"]
[cache]
type = "filecache"
[cache.filecache]
work_dir = "/c"
[rafs]
mode = "direct"
[rafs.prefetch]
enable = true
threads = 8
`,
];

test('fuzz: random bytes are refused cleanly', () => {
  const rnd = prng(0xc0ff1e);
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rnd() * 200);
    const bytes = new Uint8Array(len);
    for (let j = 0; j < len; j++) bytes[j] = Math.floor(rnd() * 256);
    outcome(bytes);
    outcome(Buffer.from(bytes).toString('latin1'));
  }
});

test('fuzz: random JSON-ish and TOML-ish token soup is refused cleanly', () => {
  const tokens = [
    '{',
    '}',
    '[',
    ']',
    ',',
    ':',
    '"device"',
    '"version"',
    '2',
    '"x"',
    'true',
    'null',
    '//c\n',
    '/*',
    '*/',
    '\n',
    ' = ',
    '[backend]',
    'type',
    '"localfs"',
    '-1',
    '1e999',
    '"\\u0000"',
  ];
  const rnd = prng(7);
  for (let i = 0; i < 3000; i++) {
    let s = '';
    const n = Math.floor(rnd() * 40);
    for (let j = 0; j < n; j++) s += tokens[Math.floor(rnd() * tokens.length)];
    outcome(s);
  }
});

test('fuzz: mutated real configs parse or are refused cleanly', () => {
  const rnd = prng(42);
  for (const base of REAL) {
    assert.equal(outcome(base), 'ok');
    const bytes = Buffer.from(base);
    for (let i = 0; i < 1500; i++) {
      const m = Buffer.from(bytes);
      const edits = 1 + Math.floor(rnd() * 4);
      for (let k = 0; k < edits; k++) {
        const at = Math.floor(rnd() * m.length);
        const what = rnd();
        if (what < 0.5) m[at] = Math.floor(rnd() * 256);
        else if (what < 0.75) m[at] = 0x20;
        else m[at] = base.charCodeAt(Math.floor(rnd() * base.length));
      }
      outcome(m);
      // Truncations too.
      outcome(base.slice(0, Math.floor(rnd() * base.length)));
    }
  }
});

test('fuzz: hostile nesting and shapes are refused cleanly and quickly', () => {
  const deep = 200_000;
  const cases = [
    '[]',
    'null',
    '0',
    '"device"',
    '['.repeat(deep),
    '{"a":'.repeat(deep),
    '{"version":2,"x":' + '['.repeat(deep) + ']'.repeat(deep) + '}',
    'a = ' + '['.repeat(deep),
    'a = ' + '{b = '.repeat(deep),
    '[' + 'a.'.repeat(deep) + 'b]',
    '/*'.repeat(deep),
    '"' + '\\'.repeat(deep),
  ];
  for (const c of cases) {
    const t0 = Date.now();
    assert.equal(outcome(c), 'refused', c.slice(0, 40));
    assert.ok(Date.now() - t0 < 5000, `slow on ${c.slice(0, 40)}`);
  }
  // Deep but within the limits, inside an unknown key: accepted with one warning.
  const ok = parseDaemonConfig(
    `{"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/d"}}, "x": ${'['.repeat(60)}${']'.repeat(60)}}`,
  );
  assert.deepEqual(ok.warnings, ['x: unknown key, ignored']);
});
