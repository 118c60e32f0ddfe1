import { createRequire } from 'node:module';

/**
 * Network libraries loaded at their first use, not when the daemon starts: a daemon reading
 * local blobs never pays for them (undici alone is several MiB of memory once loaded). They
 * are CommonJS or built in, so the first use loads them synchronously.
 */

const require = createRequire(import.meta.url);

let undiciModule: typeof import('undici') | undefined;
let aws4Module: typeof import('aws4') | undefined;
let tlsModule: typeof import('node:tls') | undefined;

/** The undici module. */
export function undici(): typeof import('undici') {
  return (undiciModule ??= require('undici') as typeof import('undici'));
}

/** The aws4 request signer. */
export function aws4(): typeof import('aws4') {
  return (aws4Module ??= require('aws4') as typeof import('aws4'));
}

/** node:tls (its root certificates are a few hundred KiB of strings once read). */
export function tls(): typeof import('node:tls') {
  return (tlsModule ??= require('node:tls') as typeof import('node:tls'));
}
