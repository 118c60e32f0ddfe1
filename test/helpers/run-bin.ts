import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from './fixtures.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Path of a compiled binary entry, e.g. `nydus-image`. */
export function binPath(name: string): string {
  // nydusd's entry is CommonJS (it sizes the libuv pool before anything starts it).
  return join(PROJECT_ROOT, 'dist', 'src', 'cli', name === 'nydusd' ? 'nydusd.cjs' : `${name}.js`);
}

/** Run one of our binaries; a run longer than `timeoutMs` is killed and reported as a hang. */
export function runBin(
  name: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [binPath(name), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} ${args.join(' ')} hung for more than ${opts.timeoutMs ?? 20000} ms`));
    }, opts.timeoutMs ?? 20000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - start });
    });
    child.stdin.end(opts.input ?? '');
  });
}
