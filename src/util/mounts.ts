import { readFileSync } from 'node:fs';

/**
 * The mount table of this process, read from /proc/self/mountinfo only: nothing here touches a
 * mounted path (a stat on a dead FUSE mount, or one this process serves, would fail or hang).
 */

/** Decode a path field of /proc/self/mountinfo (space, tab, newline, backslash are octal escapes). */
export function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points listed in /proc/self/mountinfo, in mount order. */
export function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => unescapeMountPath(l.split(' ')[4] ?? ''));
}

/** Whether something is mounted at `path` (an absolute, symlink-free path). */
export function isMounted(path: string): boolean {
  return mountPoints().includes(path);
}

/** Mount points at or below `dir` (an absolute, symlink-free path). */
export function mountPointsUnder(dir: string): string[] {
  return mountPoints().filter((mp) => mp === dir || mp.startsWith(`${dir}/`));
}
