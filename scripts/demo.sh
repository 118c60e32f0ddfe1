#!/usr/bin/env bash
# The README's main-job line: build a Nydus (RAFS v6) image from a directory with nydus-image,
# verify it, inspect it, unpack it back (the result must equal the source), then serve it with
# nydusd over FUSE (localfs backend), show and compare the mount, and unmount.
# Usage: scripts/demo.sh [SOURCE_DIR] (default: this project's src/ directory).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-src}
WORK=${NYDUS_DEMO_DIR:-/tmp/nydus-demo}
IMAGE="node dist/src/cli/nydus-image.js"
if mountpoint -q "$WORK/mnt" 2>/dev/null; then umount -l "$WORK/mnt"; fi
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

# Serve the image with nydusd (FUSE, localfs backend) and read it back through the mount.
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  echo "== (skipping the nydusd mount: it needs root and /dev/fuse)"
  exit 0
fi
MNT="$WORK/mnt"
mkdir -p "$MNT"
echo "== nydusd --bootstrap $WORK/image.boot -D $WORK/blobs --mountpoint $MNT"
node dist/src/cli/nydusd.cjs --log-level warn --bootstrap "$WORK/image.boot" -D "$WORK/blobs" \
  --mountpoint "$MNT" --apisock "$WORK/api.sock" &
PID=$!
stop() {
  if kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
  if mountpoint -q "$MNT"; then umount -l "$MNT"; fi
}
trap stop EXIT
for _ in $(seq 1 150); do
  mountpoint -q "$MNT" && break
  kill -0 "$PID" 2>/dev/null || { echo "nydusd exited before mounting" >&2; exit 1; }
  sleep 0.1
done
mountpoint -q "$MNT" || { echo "nydusd did not mount within 15 s" >&2; exit 1; }
echo "== the mounted image (top level)"
ls -l "$MNT"
echo "== diff -r $SRC $MNT"
diff -r "$SRC" "$MNT"
echo "== nydusctl info"
node dist/src/cli/nydusctl.js --sock "$WORK/api.sock" info
stop
trap - EXIT
if mountpoint -q "$MNT"; then echo "the mount is still there after SIGTERM" >&2; exit 1; fi
echo "OK: nydusd served $SRC from the image and unmounted"
