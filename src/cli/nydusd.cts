#!/usr/bin/env node
/**
 * The `nydusd` entry, CommonJS on purpose. FUSE requests and blob reads both run on the libuv
 * pool (each outstanding /dev/fuse read holds one pool thread), so the pool must be sized before
 * its first use, and Node's ES module loader uses it while loading an ES entry. A CommonJS entry
 * loads synchronously, so the size set here applies; the daemon itself is ESM.
 */
process.env['UV_THREADPOOL_SIZE'] ??= '16';
void import('./nydusd-main.js');
