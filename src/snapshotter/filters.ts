import { NydusError } from '../errors/errors.js';
import type { Info } from './types.js';

/**
 * containerd's filter language, as its List/Walk RPCs take it:
 *
 *   selectors := selector ("," selector)*        all must match
 *   selector  := fieldpath [operator value]      no operator: the field must be present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   operator  := "==" | "!=" | "~="              "~=" is a regular expression match
 *   value     := quoted | run of printable characters other than "," and white space
 *   quoted    := "..." with Go escapes; a "~=" value may also be quoted as /.../ or |...|
 *
 * Several filter strings match when any of them does; none (or one empty string) matches
 * everything. Tokenizing follows containerd's scanner, quirks included: white space is skipped
 * before a token but not after a value ("name==a " is malformed), and an unquoted value may not
 * start with ".", ",", "=", "!", "~", "/", "|" or a double quote.
 */

/** A field of the object under test: its value, or undefined when the object lacks it. */
export type FieldAdaptor = (fieldpath: string[]) => string | undefined;
export type Filter = (fields: FieldAdaptor) => boolean;

const ALWAYS: Filter = () => true;

type TokenKind = 'eof' | 'quoted' | 'value' | 'field' | 'separator' | 'operator' | 'illegal' | 'other';
interface Token {
  kind: TokenKind;
  pos: number;
  text: string;
}

const isFieldChar = (c: string): boolean => /^[A-Za-z0-9_]$/.test(c);
const isOperatorChar = (c: string): boolean => c === '=' || c === '!' || c === '~';
const isQuoteChar = (c: string): boolean => c === '/' || c === '|' || c === '"';
const isSeparatorChar = (c: string): boolean => c === ',' || c === '.';
const isSpace = (c: string): boolean => /^[\s\u0085]$/u.test(c);
const isValueChar = (c: string): boolean =>
  c !== ',' && !isSpace(c) && /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(c);

class Scanner {
  private readonly chars: string[];
  private i = 0;
  /** The next non-quoted token after an operator is a value. */
  private afterOperator = false;
  error = '';

  constructor(readonly input: string) {
    this.chars = Array.from(input);
  }

  /** Index (in characters) of the next character. */
  get index(): number {
    return this.i;
  }

  /** The next character, white space included ('' at the end). */
  peek(): string {
    return this.chars[this.i] ?? '';
  }

  scan(): Token {
    while (this.i < this.chars.length && isSpace(this.peek())) this.i++;
    const pos = this.i;
    const c = this.peek();
    if (c === '') return { kind: 'eof', pos, text: '' };
    this.i++;
    if (c === '\0') {
      this.error = 'unexpected null';
      return { kind: 'illegal', pos, text: c };
    }
    if (isQuoteChar(c)) {
      const ok = this.scanQuoted(c);
      return { kind: ok ? 'quoted' : 'illegal', pos, text: this.text(pos) };
    }
    if (isSeparatorChar(c)) {
      this.afterOperator = false;
      return { kind: 'separator', pos, text: c };
    }
    if (isOperatorChar(c)) {
      while (isOperatorChar(this.peek())) this.i++;
      this.afterOperator = true;
      return { kind: 'operator', pos, text: this.text(pos) };
    }
    if (this.afterOperator) {
      while (this.peek() !== '' && isValueChar(this.peek())) this.i++;
      this.afterOperator = false;
      return { kind: 'value', pos, text: this.text(pos) };
    }
    if (isFieldChar(c)) {
      while (isFieldChar(this.peek())) this.i++;
      return { kind: 'field', pos, text: this.text(pos) };
    }
    return { kind: 'other', pos, text: c };
  }

  private text(from: number): string {
    return this.chars.slice(from, this.i).join('');
  }

  private scanQuoted(quote: string): boolean {
    let legal = true;
    for (;;) {
      const c = this.peek();
      if (c === '' || c === '\n') {
        this.error ||= 'quoted literal not terminated';
        return false;
      }
      this.i++;
      if (c === quote) return legal;
      if (c === '\\' && !this.scanEscape(quote)) legal = false;
    }
  }

  private scanEscape(quote: string): boolean {
    const c = this.peek();
    if ('abfnrtv\\'.includes(c) || c === quote) {
      this.i++;
      return true;
    }
    const digits = (base: number, n: number): boolean => {
      for (let k = 0; k < n; k++) {
        const d = this.peek();
        if (d === '' || !(parseInt(d, base) < base) || (base === 8 && !/[0-7]/.test(d))) {
          this.error ||= 'illegal numeric escape sequence';
          return false;
        }
        this.i++;
      }
      return true;
    };
    if (/^[0-7]$/.test(c)) return digits(8, 3);
    const widths: Record<string, number> = { x: 2, u: 4, U: 8 };
    const w = widths[c];
    if (w !== undefined) {
      this.i++;
      return digits(16, w);
    }
    this.error ||= 'illegal escape sequence';
    return false;
  }
}

/** Go string-literal unquoting as containerd extends it ('/' and '|' act like '"'). */
function unquote(s: string): string | undefined {
  const chars = Array.from(s);
  const quote = chars[0];
  if (chars.length < 2 || quote === undefined || chars[chars.length - 1] !== quote) return undefined;
  const body = chars.slice(1, -1);
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const c = body[i] as string;
    if (c === quote || c === '\n') return undefined;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const e = body[++i];
    if (e === undefined) return undefined;
    const simple: Record<string, string> = {
      a: '\x07',
      b: '\b',
      f: '\f',
      n: '\n',
      r: '\r',
      t: '\t',
      v: '\v',
      '\\': '\\',
    };
    const mapped = simple[e];
    if (mapped !== undefined) {
      out += mapped;
      continue;
    }
    if (e === '"' || e === "'" || e === '|' || e === '/') {
      if (e !== quote) return undefined;
      out += e;
      continue;
    }
    const hexWidth = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
    if (hexWidth > 0) {
      const hex = body.slice(i + 1, i + 1 + hexWidth).join('');
      if (!new RegExp(`^[0-9A-Fa-f]{${hexWidth}}$`).test(hex)) return undefined;
      const v = parseInt(hex, 16);
      if (v > 0x10ffff) return undefined;
      // \xNN is a byte in Go; JavaScript strings have no bytes, so it becomes U+00NN.
      out += String.fromCodePoint(v);
      i += hexWidth;
      continue;
    }
    if (/^[0-7]$/.test(e)) {
      const oct = e + body.slice(i + 1, i + 3).join('');
      if (!/^[0-7]{3}$/.test(oct)) return undefined;
      const v = parseInt(oct, 8);
      if (v > 255) return undefined;
      out += String.fromCharCode(v);
      i += 2;
      continue;
    }
    return undefined;
  }
  return out;
}

type Op = '==' | '!=' | '~=';
interface Selector {
  fieldpath: string[];
  op: Op | 'present';
  value: string;
  re?: RegExp | null;
}

class Parser {
  private readonly sc: Scanner;

  constructor(private readonly input: string) {
    this.sc = new Scanner(input);
  }

  parse(): Filter {
    const all = [this.selector()];
    for (;;) {
      const c = this.sc.peek();
      if (c === '') break;
      if (c !== ',') this.fail(this.sc.index, `unexpected input: ${c}`);
      this.sc.scan();
      all.push(this.selector());
    }
    return (fields) => all.every((s) => matchSelector(s, fields));
  }

  private selector(): Selector {
    const fieldpath = [this.field()];
    while (this.sc.peek() === '.') {
      this.sc.scan();
      fieldpath.push(this.field());
    }
    const next = this.sc.peek();
    if (next === ',' || next === '') return { fieldpath, op: 'present', value: '' };
    const t = this.sc.scan();
    if (t.kind === 'illegal') this.fail(t.pos, this.sc.error);
    if (t.kind !== 'operator') this.fail(t.pos, 'expected an operator ("=="|"!="|"~=")');
    if (t.text !== '==' && t.text !== '!=' && t.text !== '~=') {
      this.fail(t.pos, `unsupported operator "${t.text}"`);
    }
    const op = t.text;
    const v = this.sc.scan();
    let value: string;
    if (v.kind === 'value' || v.kind === 'field') value = v.text;
    else if (v.kind === 'quoted') value = this.unquote(v, op === '~=');
    else if (v.kind === 'illegal') this.fail(v.pos, this.sc.error);
    else this.fail(v.pos, 'expected value or quoted');
    if (op !== '~=') return { fieldpath, op, value };
    let re: RegExp | null;
    try {
      re = new RegExp(value);
    } catch {
      // containerd logs a bad expression and lets the selector match nothing.
      re = null;
    }
    return { fieldpath, op, value, re };
  }

  private field(): string {
    const t = this.sc.scan();
    if (t.kind === 'field') return t.text;
    if (t.kind === 'quoted') return this.unquote(t, false);
    if (t.kind === 'illegal') this.fail(t.pos, this.sc.error);
    return this.fail(t.pos, 'expected field or quoted');
  }

  private unquote(t: Token, allowAltQuotes: boolean): string {
    if (!allowAltQuotes && !t.text.startsWith('"')) this.fail(t.pos, 'invalid quote encountered');
    const s = unquote(t.text);
    if (s === undefined) this.fail(t.pos, 'unquoting failed');
    return s;
  }

  private fail(pos: number, msg: string): never {
    throw new NydusError('ERR_INVALID_ARG', `Malformed filter "${this.input}" at offset ${pos}: ${msg}`);
  }
}

function matchSelector(s: Selector, fields: FieldAdaptor): boolean {
  const v = fields(s.fieldpath);
  switch (s.op) {
    case 'present':
      return v !== undefined;
    case '==':
      return v !== undefined && v === s.value;
    case '!=':
      return (v ?? '') !== s.value;
    case '~=':
      return s.re != null && s.re.test(v ?? '');
  }
}

/** Parse one filter string (comma-separated selectors, all of which must match). */
export function parseFilter(s: string): Filter {
  if (s === '') return ALWAYS;
  return new Parser(s).parse();
}

/** Parse several filters into one that matches when any of them does ([] matches all). */
export function parseFilters(filters: readonly string[]): Filter {
  if (filters.length === 0) return ALWAYS;
  const fs = filters.map(parseFilter);
  return (fields) => fs.some((f) => f(fields));
}

/**
 * The fields of a snapshot, as containerd's snapshot store exposes them: kind, name, parent
 * (present even when empty), and labels.<key> (a key may itself contain dots).
 */
export function snapshotFields(info: Info): FieldAdaptor {
  return (path) => {
    const [first, ...rest] = path;
    switch (first) {
      case 'kind':
        return info.kind;
      case 'name':
        return info.name;
      case 'parent':
        return info.parent;
      case 'labels': {
        const key = rest.join('.');
        return Object.hasOwn(info.labels, key) ? info.labels[key] : undefined;
      }
      default:
        return undefined;
    }
  };
}
