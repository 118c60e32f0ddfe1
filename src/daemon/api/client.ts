import { Agent, request } from 'undici';
import { NydusError, errorText } from '../../errors/errors.js';

/**
 * A client of the nydusd HTTP API over its unix socket (what upstream's nydusctl uses,
 * src/bin/nydusctl/client.rs): JSON answers in, errors as one readable line out.
 */

/** The API answered with an error status; `message` is the server's own message. */
export class ApiRequestError extends NydusError {
  readonly status: number;
  readonly serverMessage: string;

  constructor(status: number, serverMessage: string) {
    super('ERR_IO', `Request failed with HTTP status ${status}: ${serverMessage}`);
    this.name = 'ApiRequestError';
    this.status = status;
    this.serverMessage = serverMessage;
  }
}

export type Query = Record<string, string>;

function errnoOf(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur !== undefined && cur !== null && depth < 4; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

export class ApiClient {
  readonly sockPath: string;
  private readonly agent: Agent;

  constructor(sockPath: string, opts: { timeoutMs?: number } = {}) {
    this.sockPath = sockPath;
    const timeout = opts.timeoutMs ?? 300_000;
    this.agent = new Agent({
      connect: { socketPath: sockPath },
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
  }

  /** GET a JSON answer (`undefined` for 204). */
  get(path: string, query?: Query): Promise<unknown> {
    return this.call('GET', path, undefined, query);
  }

  put(path: string, body?: unknown, query?: Query): Promise<unknown> {
    return this.call('PUT', path, body, query);
  }

  post(path: string, body?: unknown, query?: Query): Promise<unknown> {
    return this.call('POST', path, body, query);
  }

  delete(path: string, query?: Query): Promise<unknown> {
    return this.call('DELETE', path, undefined, query);
  }

  /** Release the connection pool (a client left open keeps the process alive for a while). */
  close(): Promise<void> {
    return this.agent.close();
  }

  private connectError(e: unknown): NydusError {
    const code = errnoOf(e);
    const where = `nydusd API socket "${this.sockPath}"`;
    switch (code) {
      case 'ENOENT':
        return new NydusError(
          'ERR_IO',
          `Cannot connect to ${where}: no such file (is nydusd running with --apisock?)`,
        );
      case 'ECONNREFUSED':
        return new NydusError(
          'ERR_IO',
          `Cannot connect to ${where}: connection refused (nydusd is not running)`,
        );
      case 'EACCES':
        return new NydusError('ERR_IO', `Cannot connect to ${where}: permission denied`);
      case 'ENOTSOCK':
        return new NydusError('ERR_IO', `Cannot connect to ${where}: not a socket`);
      default:
        return new NydusError(
          'ERR_IO',
          `Request to ${where} failed: ${errorText(e)}${code ? ` (${code})` : ''}`,
        );
    }
  }

  private async call(
    method: 'GET' | 'PUT' | 'POST' | 'DELETE',
    path: string,
    body: unknown,
    query?: Query,
  ): Promise<unknown> {
    const qs = query === undefined ? '' : new URLSearchParams(query).toString();
    const url = `http://localhost${path}${qs === '' ? '' : `?${qs}`}`;
    let res;
    try {
      res = await request(url, {
        method,
        dispatcher: this.agent,
        headers: {
          'user-agent': 'nydusctl',
          ...(body !== undefined && { 'content-type': 'application/json' }),
        },
        ...(body !== undefined && { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      });
    } catch (e) {
      throw this.connectError(e);
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (e) {
      throw this.connectError(e);
    }
    if (res.statusCode >= 400) {
      let message = text.trim();
      try {
        const parsed = JSON.parse(text) as { message?: unknown };
        if (typeof parsed.message === 'string') message = parsed.message;
      } catch {
        // not JSON: show the text as it is
      }
      throw new ApiRequestError(res.statusCode, message === '' ? '(no message)' : message);
    }
    if (text.trim() === '') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch (e) {
      throw new NydusError('ERR_FORMAT', `Unexpected answer from nydusd (not JSON): ${errorText(e)}`);
    }
  }
}
