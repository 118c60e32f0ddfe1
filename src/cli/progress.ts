import cliProgress from 'cli-progress';

/**
 * A byte progress bar on stderr, shown only on a terminal (pipes and CI logs stay clean).
 */
export interface Progress {
  update(done: number): void;
  stop(): void;
}

export function byteProgress(label: string, total: number | undefined): Progress {
  if (process.stderr.isTTY !== true) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format:
        total === undefined ? `${label} {value} MiB` : `${label} [{bar}] {percentage}% | {value}/{total} MiB`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const mib = (n: number): number => Math.round(n / 1048576);
  bar.start(total === undefined ? 0 : mib(total), 0);
  let last = 0;
  return {
    update(done: number): void {
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      bar.update(mib(done));
    },
    stop(): void {
      bar.stop();
    },
  };
}
