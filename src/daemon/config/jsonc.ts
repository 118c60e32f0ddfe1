/**
 * JSON as the nydusd documentation writes it. Upstream nydusd reads strict JSON (serde_json),
 * but its own docs and READMEs show configs with `//` and `/* *\/` comments, trailing commas
 * and, once, a member with its comma forgotten. This reader takes all of those:
 *
 * - `//` line comments and `/* ... *\/` block comments anywhere whitespace may appear (never
 *   inside strings: `"http://host"` stays a URL);
 * - a trailing comma before `}` or `]`;
 * - an object member that follows the previous one on a new line without a comma, with a
 *   warning (`line 23: missing "," before "blob_redirected_host", assumed`).
 *
 * Everything else is strict RFC 8259: quoted keys, double-quoted strings without raw control
 * characters, JSON number syntax, `true`/`false`/`null`. Duplicate keys are an error (serde
 * rejects duplicate struct fields too). Nesting is bounded by `MAX_JSON_DEPTH`, so hostile input
 * cannot exhaust the stack. Objects are built so a `"__proto__"` key is an own property, never a
 * prototype change.
 */

/** Deepest nesting of objects and arrays accepted; real configs use five levels. */
export const MAX_JSON_DEPTH = 64;

export class JsoncSyntaxError extends Error {
  readonly line: number;
  readonly column: number;

  constructor(what: string, line: number, column: number) {
    super(`line ${line} column ${column}: ${what}`);
    this.name = 'JsoncSyntaxError';
    this.line = line;
    this.column = column;
  }
}

export interface JsoncResult {
  value: unknown;
  /** Tolerated mistakes, e.g. a missing comma, one sentence each. */
  warnings: string[];
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

/** How a character is shown in a message: quoted, with invisible ones escaped. */
function show(ch: string | undefined): string {
  return ch === undefined ? 'end of input' : JSON.stringify(ch);
}

class Reader {
  readonly #s: string;
  #pos = 0;
  /** Whether the last `skip()` crossed a line break (for the missing-comma rule). */
  #sawNewline = false;
  readonly warnings: string[] = [];

  constructor(s: string) {
    this.#s = s;
  }

  #where(pos: number): { line: number; column: number } {
    let line = 1;
    let start = 0;
    for (let i = 0; i < pos; i++) {
      if (this.#s.charCodeAt(i) === 10) {
        line++;
        start = i + 1;
      }
    }
    return { line, column: pos - start + 1 };
  }

  fail(what: string, pos = this.#pos): never {
    const { line, column } = this.#where(pos);
    throw new JsoncSyntaxError(what, line, column);
  }

  /** Skip whitespace and comments. */
  skip(): void {
    const s = this.#s;
    this.#sawNewline = false;
    for (;;) {
      const c = s[this.#pos];
      if (c === ' ' || c === '\t' || c === '\r') this.#pos++;
      else if (c === '\n') {
        this.#sawNewline = true;
        this.#pos++;
      } else if (c === '/' && s[this.#pos + 1] === '/') {
        const nl = s.indexOf('\n', this.#pos);
        this.#pos = nl < 0 ? s.length : nl;
      } else if (c === '/' && s[this.#pos + 1] === '*') {
        const end = s.indexOf('*/', this.#pos + 2);
        if (end < 0) this.fail('unterminated /* comment');
        if (s.slice(this.#pos, end).includes('\n')) this.#sawNewline = true;
        this.#pos = end + 2;
      } else return;
    }
  }

  document(): unknown {
    this.skip();
    if (this.#pos >= this.#s.length) this.fail('no JSON value');
    const v = this.value(0);
    this.skip();
    if (this.#pos < this.#s.length) this.fail(`unexpected ${show(this.#s[this.#pos])} after the JSON value`);
    return v;
  }

  value(depth: number): unknown {
    const s = this.#s;
    const c = s[this.#pos];
    if (c === '{') return this.object(depth + 1);
    if (c === '[') return this.array(depth + 1);
    if (c === '"') return this.string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (s.startsWith(word, this.#pos)) {
        this.#pos += word.length;
        return v;
      }
    }
    return this.fail(`expected a JSON value, got ${show(c)}`);
  }

  #enter(depth: number): void {
    if (depth > MAX_JSON_DEPTH) this.fail(`nested deeper than ${MAX_JSON_DEPTH} levels`);
    this.#pos++;
  }

  object(depth: number): Record<string, unknown> {
    this.#enter(depth);
    const obj: Record<string, unknown> = {};
    this.skip();
    if (this.#s[this.#pos] === '}') {
      this.#pos++;
      return obj;
    }
    for (;;) {
      const keyPos = this.#pos;
      if (this.#s[this.#pos] !== '"') this.fail(`expected a quoted key, got ${show(this.#s[this.#pos])}`);
      const key = this.string();
      if (Object.hasOwn(obj, key)) this.fail(`duplicate key ${JSON.stringify(key)}`, keyPos);
      this.skip();
      if (this.#s[this.#pos] !== ':') this.fail(`expected ":" after key ${JSON.stringify(key)}`);
      this.#pos++;
      this.skip();
      Object.defineProperty(obj, key, {
        value: this.value(depth),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      this.skip();
      const c = this.#s[this.#pos];
      if (c === ',') {
        this.#pos++;
        this.skip();
        if (this.#s[this.#pos] === '}') {
          this.#pos++;
          return obj;
        }
      } else if (c === '}') {
        this.#pos++;
        return obj;
      } else if (c === '"' && this.#sawNewline) {
        // The registry example in the nydusd guide forgets one comma at a line end.
        const { line } = this.#where(this.#pos);
        const next = this.#peekString();
        this.warnings.push(`line ${line}: missing "," before ${JSON.stringify(next)}, assumed`);
      } else this.fail(`expected "," or "}" after the value of ${JSON.stringify(key)}, got ${show(c)}`);
    }
  }

  array(depth: number): unknown[] {
    this.#enter(depth);
    const arr: unknown[] = [];
    this.skip();
    if (this.#s[this.#pos] === ']') {
      this.#pos++;
      return arr;
    }
    for (;;) {
      arr.push(this.value(depth));
      this.skip();
      const c = this.#s[this.#pos];
      if (c === ',') {
        this.#pos++;
        this.skip();
        if (this.#s[this.#pos] === ']') {
          this.#pos++;
          return arr;
        }
      } else if (c === ']') {
        this.#pos++;
        return arr;
      } else this.fail(`expected "," or "]" in an array, got ${show(c)}`);
    }
  }

  #peekString(): string {
    const save = this.#pos;
    const v = this.string();
    this.#pos = save;
    return v;
  }

  string(): string {
    const s = this.#s;
    const start = this.#pos;
    this.#pos++;
    let out = '';
    let run = this.#pos;
    for (;;) {
      const c = s[this.#pos];
      if (c === undefined) this.fail('unterminated string', start);
      if (c === '"') {
        out += s.slice(run, this.#pos);
        this.#pos++;
        return out;
      }
      if (c.charCodeAt(0) < 0x20) this.fail(`control character ${show(c)} in a string`);
      if (c === '\\') {
        out += s.slice(run, this.#pos);
        const e = s[this.#pos + 1];
        if (e === 'u') {
          const hex = s.slice(this.#pos + 2, this.#pos + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('bad \\u escape in a string');
          out += String.fromCharCode(parseInt(hex, 16));
          this.#pos += 6;
        } else {
          const r = e === undefined ? undefined : ESCAPES[e];
          if (r === undefined) this.fail(`bad escape "\\${e ?? ''}" in a string`);
          out += r;
          this.#pos += 2;
        }
        run = this.#pos;
      } else this.#pos++;
    }
  }

  number(): number {
    NUMBER.lastIndex = this.#pos;
    const m = NUMBER.exec(this.#s);
    if (m === null) return this.fail(`bad number starting with ${show(this.#s[this.#pos])}`);
    this.#pos += m[0].length;
    return Number(m[0]);
  }
}

/** Parse JSON with comments and trailing commas. Throws `JsoncSyntaxError` with line and column. */
export function parseJsonc(text: string): JsoncResult {
  const r = new Reader(text);
  const value = r.document();
  return { value, warnings: r.warnings };
}
