import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface CurlResult {
  status: number;
  body: string;
  /** Parsed body when it is JSON, else undefined. */
  json: unknown;
}

/**
 * One request to nydusd's API socket with the real curl, as the upstream docs do it:
 * `curl --unix-socket SOCK -X METHOD http://localhost/PATH -d BODY`.
 */
export async function curl(sock: string, method: string, path: string, body?: string): Promise<CurlResult> {
  const args = ['-sS', '--max-time', '20', '--unix-socket', sock, '-X', method, '-w', '\n%{http_code}'];
  if (body !== undefined) args.push('-H', 'Content-Type: application/json', '--data-binary', body);
  args.push(`http://localhost${path}`);
  const r = await execFileP('curl', args, { timeout: 30_000, maxBuffer: 16 << 20 });
  const cut = r.stdout.lastIndexOf('\n');
  const text = r.stdout.slice(0, cut);
  let json: unknown;
  try {
    json = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: Number(r.stdout.slice(cut + 1)), body: text, json };
}

/** A localfs v1 config text (as `config` of a mount request). */
export function localfsConfigText(blobDir: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    device: { backend: { type: 'localfs', config: { dir: blobDir } } },
    mode: 'direct',
    ...extra,
  });
}
