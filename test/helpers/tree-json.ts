/**
 * The `tree -a -J -v` rendering used by upstream's `.result` files: one entry per line,
 * directories open `"contents":[` on their line and close with `]}` on their own line, two
 * spaces of indentation per level, the whole list wrapped in `[` ... `]`.
 */
export interface TreeNode {
  type: 'directory' | 'file' | 'link' | 'fifo' | 'socket' | 'char' | 'block';
  name: string;
  target?: string;
  contents?: TreeNode[];
}

function render(node: TreeNode, indent: number, last: boolean, out: string[]): void {
  const pad = ' '.repeat(indent);
  const comma = last ? '' : ',';
  const head = `{"type":"${node.type}","name":${JSON.stringify(node.name)}`;
  if (node.type === 'directory') {
    out.push(`${pad}${head},"contents":[`);
    const kids = node.contents ?? [];
    kids.forEach((k, i) => render(k, indent + 2, i === kids.length - 1, out));
    out.push(`${pad}]}${comma}`);
  } else if (node.type === 'link') {
    out.push(`${pad}${head},"target":${JSON.stringify(node.target ?? '')},"contents":[]}${comma}`);
  } else {
    out.push(`${pad}${head}}${comma}`);
  }
}

/** Lines of the tree part (without the report line and closing bracket). */
export function treeJsonLines(root: TreeNode): string[] {
  const out = ['['];
  render(root, 2, false, out);
  return out;
}

/** The tree part of an upstream `.result` file: everything before the report line. */
export function resultTreeLines(result: string): string[] {
  const lines = result.split('\n');
  const idx = lines.findIndex((l) => l.includes('"type":"report"'));
  return lines.slice(0, idx);
}

/** The md5 lines of a `.result` file, as [md5, path] pairs. */
export function resultMd5s(result: string): [string, string][] {
  return result
    .split('\n')
    .map((l) => /^([0-9a-f]{32}) {2}(\/.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [m[1]!, m[2]!]);
}
