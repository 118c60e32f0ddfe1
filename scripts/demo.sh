#!/usr/bin/env bash
# The README's main-job line: build a Nydus (RAFS v6) image from a directory with nydus-image,
# verify it, inspect it, and unpack it back, checking the result equals the source.
# Usage: scripts/demo.sh [SOURCE_DIR] (default: this project's src/ directory).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-src}
WORK=${NYDUS_DEMO_DIR:-/tmp/nydus-demo}
IMAGE="node dist/src/cli/nydus-image.js"
rm -rf "$WORK" && mkdir -p "$WORK/blobs" "$WORK/unpacked"

echo "== nydus-image create $SRC"
$IMAGE create --log-level warn -B "$WORK/image.boot" -D "$WORK/blobs" "$SRC"
echo "== nydus-image check (metadata and every chunk's digest)"
$IMAGE check --log-level warn "$WORK/image.boot" -D "$WORK/blobs"
echo "== nydus-image inspect -R stats"
$IMAGE inspect "$WORK/image.boot" -R stats
echo "== nydus-image unpack, then compare with the source"
$IMAGE unpack --log-level warn "$WORK/image.boot" -D "$WORK/blobs" --output "$WORK/image.tar"
tar -xf "$WORK/image.tar" -C "$WORK/unpacked"
diff -r "$SRC" "$WORK/unpacked"
echo "OK: the image at $WORK unpacks to exactly $SRC"
