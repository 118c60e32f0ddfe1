// B1's warm build (issue #12): the same build as `nydus-image create --compressor zstd
// --fs-version 6 -B OUT/bootstrap -b OUT/blob SRC`, but through the builder's `build()` run
// several times in one Node.js process, the page cache dropped before each, and only the last
// one reported. By then the main thread's code is compiled and optimized (V8's warm-up is paid)
// and the process and its modules are loaded; the chunk workers are still started anew for each
// build, as in every build. What the cold process (the row "nydus-image create --compressor
// zstd") takes above this is start-up, module loading and the main thread's JIT warm-up; what
// this one takes above the Node.js floor (b1-floor.mjs) is the RAFS work itself.
//
//   node bench/b1-warm.mjs --build BUILD [--runs N] SRC OUT_DIR
//
// BUILD is the bench's private build (the directory holding src/builder/build.js). Needs root
// (it writes /proc/sys/vm/drop_caches). Prints one line per build and, last, the line the bench
// reads: "b1-warm: last build W s wall, C CPU s" (CPU of the whole process during that build,
// the chunk workers included).

import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

try {
  await main();
} catch (e) {
  console.error(`b1-warm: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}

async function main() {
  const args = process.argv.slice(2);
  let build = '';
  let runs = 3;
  const rest = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--build') build = args[++i] ?? '';
    else if (args[i] === '--runs') runs = Number(args[++i]);
    else rest.push(args[i]);
  }
  if (build === '' || rest.length !== 2 || !Number.isInteger(runs) || runs < 1)
    throw new Error('usage: node bench/b1-warm.mjs --build BUILD [--runs N] SRC OUT_DIR');
  const [src, out] = /** @type {[string, string]} */ (rest);
  const mod = (/** @type {string} */ p) => import(pathToFileURL(resolve(build, p)).href);
  const { build: runBuild } = await mod('src/builder/build.js');
  const { silentLogger } = await mod('src/log/logger.js');
  let last = { wall: NaN, cpu: NaN };
  for (let i = 0; i < runs; i++) {
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    // Cold caches for every build, as the bench's runs of the command have.
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await runBuild({
      source: src,
      type: 'dir-rafs',
      fsVersion: 6,
      compressor: 'zstd',
      digester: 'blake3',
      chunkSize: 1024 * 1024,
      alignedChunk: false,
      bootstrap: join(out, 'bootstrap'),
      blob: join(out, 'blob'),
      inlineMeta: false,
      blobToc: false,
      whiteoutSpec: 'oci',
      prefetchPatterns: [],
      repeatable: false,
      log: silentLogger,
    });
    const wall = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    last = { wall, cpu: (c.user + c.system) / 1e6 };
    console.log(
      `build ${i + 1}/${runs}: ${wall.toFixed(3)} s wall, ${last.cpu.toFixed(3)} CPU s, ` +
        `${r.stats.files} files, ${r.stats.chunks} chunks`,
    );
  }
  console.log(`b1-warm: last build ${last.wall.toFixed(3)} s wall, ${last.cpu.toFixed(3)} CPU s`);
}
