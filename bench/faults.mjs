// The fault matrix: fault x backend x (right bytes, errors, recovered), written into
// BENCHMARKS.md between the markers `<!-- faults:begin -->` and `<!-- faults:end -->` (appended
// at the end when they are not there yet; the rest of the file is left as it is).
//
//   node bench/faults.mjs                 measure (root, FUSE) and write the section
//   node bench/faults.mjs --render [FILE] write the section again from saved results
//
// What runs is the fault suite's own harness (test/faults/harness.ts, also run by
// test/faults/faults.test.ts): for each network backend the servers holding a small image's
// blob, the fault proxy (test/helpers/fault-proxy.ts) between them and nydusd, and for each
// fault a fresh nydusd mount read by 16 concurrent readers while the fault is on, then once
// more with the fault off. The harness is compiled with src/ and test/helpers/ into
// WORK/faults-build at the start (as run.mjs does for src/), so that other builds of dist/ during
// the run cannot change what is measured.
//
// Environment (all optional):
//   NYDUS_BENCH_DIR        work directory (/var/tmp/nydus-bench); results in WORK/results-faults.json
//   NYDUS_BENCH_OUTPUT     report path (BENCHMARKS.md at the project root)
//   NYDUS_FAULTS_BACKENDS  comma-separated subset of registry,s3,oss,http-proxy
//   NYDUS_FAULTS_ONLY      comma-separated subset of the fault names (FAULT_CASES)
import console from 'node:console';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { outputOf } from './measure.mjs';
import { fx, int, machineSection, md, plural } from './report-common.mjs';
import { compileProject, formatMarkdown, machine } from './run.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BEGIN = '<!-- faults:begin -->';
const END = '<!-- faults:end -->';

const config = {
  work: resolve(process.env['NYDUS_BENCH_DIR'] || '/var/tmp/nydus-bench'),
  output: resolve(process.env['NYDUS_BENCH_OUTPUT'] || join(ROOT, 'BENCHMARKS.md')),
  backends: listEnv('NYDUS_FAULTS_BACKENDS'),
  faults: listEnv('NYDUS_FAULTS_ONLY'),
};

/** @param {string} name */
function listEnv(name) {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v.split(',').map((s) => s.trim());
}

/** @param {string} msg */
const say = (msg) => console.log(`[faults ${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** @param {string} pkg */
const debVersion = (pkg) => outputOf('dpkg-query', ['-W', '-f', '${Version}', pkg]) || 'not installed';

const resultsPath = () => join(config.work, 'results-faults.json');

/**
 * Compile src/, test/helpers/ and the harness into WORK/faults-build/dist (package.json beside
 * it, node_modules linked), so the helpers find nydusd at dist/src/cli as in the project.
 * @returns {string} the harness module's path
 */
function privateBuild() {
  const dir = join(config.work, 'faults-build');
  compileProject(
    dir,
    [
      join(ROOT, 'src', '**', '*.ts'),
      join(ROOT, 'src', '**', '*.cts'),
      join(ROOT, 'test', 'helpers', '**', '*.ts'),
      join(ROOT, 'test', 'faults', 'harness.ts'),
    ],
    join(dir, 'dist'),
    'src/, test/helpers/ and the fault harness',
  );
  return join(dir, 'dist', 'test', 'faults', 'harness.js');
}

async function measure() {
  if (process.getuid?.() !== 0) throw new Error('the fault matrix mounts nydusd with FUSE: run it as root');
  if (!existsSync('/dev/fuse')) throw new Error('/dev/fuse is missing');
  mkdirSync(config.work, { recursive: true });
  const harness = await import(pathToFileURL(privateBuild()).href);
  /** @type {import('../test/faults/harness.js').FaultCase[]} */
  const faults = harness.FAULT_CASES.filter(
    (/** @type {{ name: string }} */ f) => config.faults === undefined || config.faults.includes(f.name),
  );
  const imgDir = mkdtempSync(join(config.work, 'faults-image-'));
  const started = performance.now();
  /** @type {import('../test/faults/harness.js').FaultResult[]} */
  const results = [];
  /** @type {{ backend: string, why: string }[]} */
  const skipped = [];
  try {
    const img = await harness.buildFaultImage(imgDir);
    say(`image: ${img.md5.size} files, ${int(img.bytes)} bytes`);
    for (const backend of harness.FAULT_BACKENDS) {
      if (config.backends !== undefined && !config.backends.includes(backend.name)) continue;
      const why = backend.unavailable();
      if (why !== undefined) {
        say(`${backend.name}: skipped (${why})`);
        skipped.push({ backend: backend.name, why });
        continue;
      }
      try {
        await harness.runBackendFaults(backend, img, faults, (/** @type {any} */ r) => {
          say(harness.resultLine(r));
          results.push(r);
        });
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        say(`${backend.name}: could not run (${msg})`);
        skipped.push({ backend: backend.name, why: msg });
      }
    }
    const saved = {
      kind: 'faults',
      date: new Date().toISOString().slice(0, 10),
      command: 'node bench/faults.mjs',
      machine: machine(),
      versions: {
        dockerRegistry: debVersion('docker-registry'),
        nginx: debVersion('nginx'),
        fuse: debVersion('fuse3'),
      },
      image: { files: img.md5.size, bytes: img.bytes, chunkSize: 0x10000 },
      netTimeout: harness.NET_TIMEOUT_S,
      readerBoundMs: harness.READER_BOUND_MS,
      faults: faults.map((/** @type {any} */ f) => ({ name: f.name, what: f.what })),
      results,
      skipped,
      minutes: (performance.now() - started) / 60000,
    };
    writeFileSync(resultsPath(), `${JSON.stringify(saved, null, 2)}\n`);
    return saved;
  } finally {
    rmSync(imgDir, { recursive: true, force: true });
  }
}

/**
 * The cell of one result: reads right, wrong and failed, and whether every file read right once
 * the fault was off.
 * @param {any} r
 */
function cell(r) {
  if (r === undefined) return 'not run';
  if (r.failed !== undefined) return `failed: ${r.failed.split('\n')[0]}`;
  const d = r.during;
  const parts = [`${int(d.right)} right`, `${int(d.errors)} EIO`];
  parts.push(d.wrong === 0 ? '0 wrong' : `**${int(d.wrong)} wrong**`);
  if (d.hung > 0) parts.push(`**${d.hung} hung**`);
  parts.push(r.recovered ? 'recovered' : '**not recovered**');
  return parts.join(', ');
}

/**
 * The report section (between the markers).
 * @param {any} s saved results
 */
export function renderFaults(s) {
  const backends = [...new Set(s.results.map((/** @type {any} */ r) => r.backend))];
  const by = new Map(s.results.map((/** @type {any} */ r) => [`${r.backend}\0${r.fault}`, r]));
  const L = [BEGIN, '', '## Faults: right bytes or an error, never wrong bytes', ''];
  L.push(
    `Measured on ${s.date} (nydus-ts commit ${s.machine.commit}) by \`${s.command}\` in ${fx(s.minutes, 1)} min. ` +
      'Not a speed benchmark: it shows what a reader gets while the network misbehaves. Do not edit by hand: ' +
      'run the command again (it rewrites only this section).',
    '',
    '### How it was produced',
    '',
    `- The image: ${int(s.image.files)} files (small random and text files in nested directories, some of ` +
      `32-192 KiB, two of 600-900 KiB), ${int(s.image.bytes)} bytes, one blob, chunk size ` +
      `${s.image.chunkSize / 1024} KiB, built by \`nydus-image create\`.`,
    '- Backends: registry (Debian `docker-registry`), s3 and oss (s3rver behind the signature-checking ' +
      'front of test/helpers/s3.ts), http-proxy (nginx serving the blob directory). The fault proxy ' +
      '(test/helpers/fault-proxy.ts, 127.0.0.1) sits between nydusd and the server; faults apply to data ' +
      'requests (GETs of the blob) only.',
    `- nydusd: a fresh mount per cell, v2 config, no cache (\`dummycache\`), \`timeout\` and ` +
      `\`connect_timeout\` ${s.netTimeout} s, otherwise defaults (retries as the backend has them). ` +
      'Chunks from a network backend are verified against their digests and a wrong one is fetched ' +
      'once more before the read fails (EIO).',
    `- Per cell: the fault is switched on, 16 readers (\`md5sum\` over every file, each in its own ` +
      `order, concurrently; fewer when the fault says so) read the whole image; each read is right ` +
      `(md5 of the source file), wrong, or an error. A reader still running after ` +
      `${fx(s.readerBoundMs / 1000, 0)} s counts as hung. Then the fault is switched off and one more ` +
      'pass over every file on the same mount must read everything right ("recovered").',
    `- The harness is test/faults/harness.ts, the same the test suite (test/faults/faults.test.ts) runs.`,
    '',
  );
  L.push(
    ...machineSection(s.machine, [
      ['docker-registry (Debian)', s.versions.dockerRegistry],
      ['nginx (Debian)', s.versions.nginx],
    ]),
  );
  L.push(
    '### Faults',
    '',
    md([
      ['fault', 'what the proxy does'],
      ['---', '---'],
      ...s.faults.map((/** @type {any} */ f) => [f.name, f.what]),
    ]),
    '',
  );
  L.push('### Matrix', '');
  const rows = [
    ['fault', ...backends],
    ['---', ...backends.map(() => '---')],
  ];
  for (const f of s.faults) rows.push([f.name, ...backends.map((b) => cell(by.get(`${b}\0${f.name}`)))]);
  L.push(md(rows), '');
  L.push(
    'Each cell: file reads (files x readers) that gave the right bytes, that failed with EIO, that gave ' +
      'wrong bytes, and whether every file read right once the fault was off.',
    '',
  );
  const detail = [
    ['backend', 'fault', 'reads', 'data requests hit / seen', 'slowest reader s', 'cell s'],
    ['---', '---', '---', '---', '---', '---'],
  ];
  for (const r of s.results) {
    detail.push([
      r.backend,
      r.fault,
      `${int(r.files)} x ${r.readers}`,
      `${int(r.proxy.injected)} / ${int(r.proxy.matched)}`,
      fx(r.during.slowestMs / 1000, 1),
      fx(r.seconds, 1),
    ]);
  }
  L.push('### Details', '', md(detail), '');
  for (const k of s.skipped) L.push(`- ${k.backend}: not measured (${k.why})`);
  if (s.skipped.length > 0) L.push('');
  const all = s.results.filter((/** @type {any} */ r) => r.failed === undefined);
  const wrong = all.reduce((n, /** @type {any} */ r) => n + r.during.wrong + r.after.wrong, 0);
  const hung = all.reduce((n, /** @type {any} */ r) => n + r.during.hung, 0);
  const unrecovered = all.filter((/** @type {any} */ r) => !r.recovered).length;
  L.push(
    '### Reading',
    '',
    `${plural(all.length, 'cell')} ran${s.results.length > all.length ? ` (${s.results.length - all.length} could not)` : ''}: ` +
      `${wrong === 0 ? 'no read gave wrong bytes' : `**${int(wrong)} reads gave wrong bytes**`}, ` +
      `${hung === 0 ? 'no reader hung' : `**${hung} readers hung**`}, and ` +
      `${unrecovered === 0 ? 'every file read right once the fault was off' : `**${plural(unrecovered, 'cell')} did not recover**`}.`,
    '',
    END,
  );
  return L.join('\n');
}

/**
 * Put the section into the report, between the markers (appended when they are not there).
 * @param {string} section
 */
async function writeSection(section) {
  const old = existsSync(config.output) ? readFileSync(config.output, 'utf8') : '# Benchmarks\n';
  const b = old.indexOf(BEGIN);
  const e = old.indexOf(END);
  const text =
    b >= 0 && e > b
      ? `${old.slice(0, b)}${section}${old.slice(e + END.length)}`
      : `${old.trimEnd()}\n\n${section}\n`;
  writeFileSync(config.output, await formatMarkdown(text, config.output));
}

async function main() {
  const render = process.argv.indexOf('--render');
  const saved =
    render >= 0
      ? JSON.parse(readFileSync(process.argv[render + 1] ?? resultsPath(), 'utf8'))
      : await measure();
  await writeSection(renderFaults(saved));
  say(`wrote the fault matrix into ${config.output}${render >= 0 ? '' : ` (results in ${resultsPath()})`}`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`faults: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  });
}
