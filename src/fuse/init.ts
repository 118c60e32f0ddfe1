import {
  Errno,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_KERNEL_MINOR_VERSION,
  InitFlag,
  initFlagNames,
} from './abi.js';
import { FuseError } from './errors.js';
import type { InitIn } from './messages.js';
import type { InitOut } from './replies.js';

/**
 * INIT negotiation (fuse.h "Version negotiation"): both sides state their version; with equal
 * majors both use the smaller minor. A kernel with a larger major gets our major back and sends
 * a new INIT; a kernel with a smaller one cannot be served. Flags: the kernel offers what it
 * supports, the reply grants a subset, and only granted bits take effect. Bits 32..63 travel in
 * flags2, which the kernel reads only when the reply sets FUSE_INIT_EXT
 * (fs/fuse/inode.c process_init_reply).
 */

export interface InitOptions {
  /** InitFlag bits the daemon wants; the reply grants those the kernel offers. */
  readonly want: bigint;
  /** Readahead in bytes; the reply never exceeds the kernel's own. Default: the kernel's. */
  readonly maxReadahead?: number;
  /** Background requests (async reads) in flight; 0 keeps the kernel default of 12. */
  readonly maxBackground?: number;
  /** 0 keeps the kernel default (3/4 of max_background). */
  readonly congestionThreshold?: number;
  /** Largest WRITE; irrelevant read-only but bounds the read buffer. Default: maxPages pages. */
  readonly maxWrite?: number;
  /** Timestamp granularity in ns. Default 1 (RAFS keeps nanoseconds). */
  readonly timeGran?: number;
  /**
   * Pages per request (with MAX_PAGES): 256 makes 1 MiB READs. The kernel caps it at its
   * fs.fuse.max_pages_limit (256 by default). Default 256.
   */
  readonly maxPages?: number;
  /** With PASSTHROUGH only. Default 0. */
  readonly maxStackDepth?: number;
  /** Seconds, with REQUEST_TIMEOUT only. Default 0. */
  readonly requestTimeout?: number;
}

export type InitNegotiation =
  /** Serve with `minor` and `flags` (the granted set, as sent in `reply`). */
  | { readonly kind: 'accept'; readonly reply: InitOut; readonly minor: number; readonly flags: bigint }
  /** The kernel's major is newer: send `reply` and expect another INIT. */
  | { readonly kind: 'retry'; readonly reply: InitOut };

export const DEFAULT_MAX_PAGES = 256;
const PAGE = 4096;
const LOW_WORD = 0xffff_ffffn;

function blankReply(minor: number): InitOut {
  return {
    major: FUSE_KERNEL_VERSION,
    minor,
    maxReadahead: 0,
    flags: 0n,
    maxBackground: 0,
    congestionThreshold: 0,
    maxWrite: 0,
    timeGran: 0,
    maxPages: 0,
    mapAlignment: 0,
    maxStackDepth: 0,
    requestTimeout: 0,
  };
}

/**
 * Answer a kernel's INIT. Throws a FuseError with errno EPROTO (answer it with that) when the
 * kernel is too old to serve.
 */
export function negotiateInit(req: InitIn, opts: InitOptions): InitNegotiation {
  if (req.major > FUSE_KERNEL_VERSION) return { kind: 'retry', reply: blankReply(FUSE_KERNEL_MINOR_VERSION) };
  if (req.major < FUSE_KERNEL_VERSION || req.minor < FUSE_MIN_KERNEL_MINOR_VERSION)
    throw new FuseError(
      'ERR_UNSUPPORTED',
      `Cannot serve FUSE protocol ${req.major}.${req.minor}: ${FUSE_KERNEL_VERSION}.${FUSE_MIN_KERNEL_MINOR_VERSION} or newer is needed`,
      Errno.EPROTO,
    );
  const minor = Math.min(req.minor, FUSE_KERNEL_MINOR_VERSION);
  let flags = opts.want & req.flags;
  if (flags > LOW_WORD && (req.flags & InitFlag.INIT_EXT) !== 0n) flags |= InitFlag.INIT_EXT;
  const maxPages = opts.maxPages ?? DEFAULT_MAX_PAGES;
  const reply: InitOut = {
    ...blankReply(minor),
    maxReadahead: Math.min(opts.maxReadahead ?? req.maxReadahead, req.maxReadahead),
    flags,
    maxBackground: opts.maxBackground ?? 0,
    congestionThreshold: opts.congestionThreshold ?? 0,
    maxWrite: opts.maxWrite ?? maxPages * PAGE,
    timeGran: opts.timeGran ?? 1,
    maxPages,
    maxStackDepth: opts.maxStackDepth ?? 0,
    requestTimeout: opts.requestTimeout ?? 0,
  };
  return { kind: 'accept', reply, minor, flags };
}

/** Flags the daemon wanted but the kernel did not offer, by name (for a log line). */
export function refusedInitFlags(want: bigint, granted: bigint): string[] {
  return initFlagNames(want & ~granted & ~InitFlag.INIT_EXT);
}
