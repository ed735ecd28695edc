#!/usr/bin/env bash
#! scripts/docker-build.sh — builds the insync container image FROM scratch, with no registry
#! pull: the insync binaries plus exactly the shared libraries `ldd` says they load (libc,
#! libm, libgcc_s, the loader). docker-compose.yml runs this image for every service.
#
# Usage: scripts/docker-build.sh [--bin-dir DIR] [--tag IMAGE]
#   (default)       cargo build --release, then package target/release
#   --bin-dir DIR   package the binaries already in DIR (no cargo; the compose test passes the
#                   debug binaries it was built with, so CI needs no second, release build)
#   --tag IMAGE     image name (default: $INSYNC_IMAGE, else insync:local — what compose runs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${INSYNC_IMAGE:-insync:local}"
BIN_DIR=""
BINARIES=(insync-broker insync insync-producer)

die() { echo "docker-build.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs an image name}"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^#! \{0,1\}//; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done

command -v docker >/dev/null 2>&1 || die "docker not found"
if [ -z "$BIN_DIR" ]; then
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"
  echo "building release binaries..." >&2
  (cd "$ROOT" && cargo build --release --quiet -p insync-broker -p insync-cli) || die "cargo build failed"
  BIN_DIR="$ROOT/target/release"
fi

CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/insync-image.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
ROOTFS="$CONTEXT/rootfs"
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/data" "$ROOTFS/tmp"

for b in "${BINARIES[@]}"; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b not found (build it first, or drop --bin-dir)"
  # Debug info is most of a debug binary's size and useless in the image.
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$ROOTFS/bin/$b" "$BIN_DIR/$b"
  else
    cp "$BIN_DIR/$b" "$ROOTFS/bin/$b"
  fi
done

# Every library the loader maps, at the path it maps it from (cp -L: /lib64/ld-linux… is a
# symlink on the host; the image gets the file itself).
libs=$(for b in "${BINARIES[@]}"; do ldd "$BIN_DIR/$b"; done |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
# A fully static build (RUSTFLAGS="-C target-feature=+crt-static" … --target x86_64-unknown-linux-gnu)
# needs none.
if [ -z "$libs" ] && ! ldd "$BIN_DIR/${BINARIES[0]}" 2>&1 | grep -qE 'statically linked|not a dynamic'; then
  die "ldd listed no libraries for $BIN_DIR/${BINARIES[0]}"
fi
for lib in $libs; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done
# glibc ≥ 2.34 has files/dns NSS built in; say the order anyway (/etc/hosts, then DNS).
echo "hosts: files dns" >"$ROOTFS/etc/nsswitch.conf"

cp "$ROOT/docker/Dockerfile" "$CONTEXT/Dockerfile"

echo "building image $TAG from $BIN_DIR ($(echo "$libs" | wc -l) shared libraries)..." >&2
docker build --quiet -t "$TAG" "$CONTEXT" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$TAG")
echo "built $TAG ($((size / 1024 / 1024)) MiB)"
