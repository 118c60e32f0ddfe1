import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsoncSyntaxError, MAX_JSON_DEPTH, parseJsonc } from '../../../src/daemon/config/jsonc.js';

/** Unit tests of the JSON-with-comments reader the config parser uses. */

const value = (s: string): unknown => parseJsonc(s).value;

function syntaxError(s: string, message: string): void {
  assert.throws(
    () => parseJsonc(s),
    (e) => e instanceof JsoncSyntaxError && e.message === message,
    `${JSON.stringify(s)} should fail with ${message}`,
  );
}

test('jsonc: strict JSON reads as JSON.parse reads it', () => {
  const texts = [
    '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
    '[-0, 1.5, 1e3, -2E-2, 0.25]',
    '"\\u00e9\\n\\t\\"\\\\\\/"',
    '  {}  ',
    '[]',
    'true',
  ];
  for (const s of texts) assert.deepEqual(value(s), JSON.parse(s), s);
});

test('jsonc: // and /* */ comments are skipped outside strings only', () => {
  const s = `// leading
  {
    // localfs | oss | registry
    "type": "localfs", /* inline */ "url": "http://host//path", // trailing
    "glob": "/* not a comment */",
    /* multi
       line */
    "n": 131072 // 128KB
  }
  // after`;
  assert.deepEqual(value(s), {
    type: 'localfs',
    url: 'http://host//path',
    glob: '/* not a comment */',
    n: 131072,
  });
});

test('jsonc: trailing commas in objects and arrays', () => {
  assert.deepEqual(value('{"a": [1, 2,], "b": {"c": 1,},}'), { a: [1, 2], b: { c: 1 } });
});

test('jsonc: a member after a line break without its comma is taken, with a warning', () => {
  const r = parseJsonc('{\n  "a": "x"\n  // note\n  "b": "y"\n}');
  assert.deepEqual(r.value, { a: 'x', b: 'y' });
  assert.deepEqual(r.warnings, ['line 4: missing "," before "b", assumed']);
});

test('jsonc: syntax errors say where and what', () => {
  syntaxError('', 'line 1 column 1: no JSON value');
  syntaxError('{"a": 1 "b": 2}', 'line 1 column 9: expected "," or "}" after the value of "a", got "\\""');
  syntaxError('[1 2]', 'line 1 column 4: expected "," or "]" in an array, got "2"');
  syntaxError('{a: 1}', 'line 1 column 2: expected a quoted key, got "a"');
  syntaxError('{"a" 1}', 'line 1 column 6: expected ":" after key "a"');
  syntaxError('{"a": 1,\n "a": 2}', 'line 2 column 2: duplicate key "a"');
  syntaxError('{"a": "x', 'line 1 column 7: unterminated string');
  syntaxError('"a\nb"', 'line 1 column 3: control character "\\n" in a string');
  syntaxError('"\\x"', 'line 1 column 2: bad escape "\\x" in a string');
  syntaxError('"\\u12G4"', 'line 1 column 2: bad \\u escape in a string');
  syntaxError('{} /* open', 'line 1 column 4: unterminated /* comment');
  syntaxError('{} x', 'line 1 column 4: unexpected "x" after the JSON value');
  syntaxError('{"a": 01}', 'line 1 column 8: expected "," or "}" after the value of "a", got "1"');
  syntaxError('{"a": ...}', 'line 1 column 7: expected a JSON value, got "."');
  syntaxError("{'a': 1}", 'line 1 column 2: expected a quoted key, got "\'"');
  syntaxError('{"a": 1} {"b": 2}', 'line 1 column 10: unexpected "{" after the JSON value');
  syntaxError('{"a": 1 "b": 2}', 'line 1 column 9: expected "," or "}" after the value of "a", got "\\""');
});

test(`jsonc: nesting is bounded at ${MAX_JSON_DEPTH} levels`, () => {
  const ok = '['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH);
  assert.doesNotThrow(() => parseJsonc(ok));
  syntaxError(
    '['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1),
    `line 1 column ${MAX_JSON_DEPTH + 1}: nested deeper than ${MAX_JSON_DEPTH} levels`,
  );
  // A million levels: a clean error, not a stack overflow.
  assert.throws(() => parseJsonc('{"a":'.repeat(1_000_000)), JsoncSyntaxError);
});

test('jsonc: "__proto__" is an own key, never a prototype', () => {
  const v = value('{"__proto__": {"polluted": true}, "constructor": 1}') as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.deepEqual(Object.keys(v), ['__proto__', 'constructor']);
  assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
});
