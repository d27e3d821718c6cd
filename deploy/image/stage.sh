#!/usr/bin/env bash
# Prepares the container image's whole filesystem in target/image-rootfs/, which the root
# Dockerfile copies into an empty (`FROM scratch`) image:
#
#   /ivr-bridge                      the release binary, debug info stripped
#   the shared libraries it loads    exactly those `ldd` names (glibc, libgcc_s), at the same paths
#   /etc/passwd, /etc/group          user `nobody`, group `nogroup` (65534): the image runs as them
#   /etc/nsswitch.conf, /etc/hosts   name resolution: files, then DNS; `localhost` is 127.0.0.1
#
# Nothing else: no shell, no package manager, no CA bundle (the binary carries Mozilla's roots
# through webpki-roots; nothing in it reads /etc/ssl). glibc 2.34 and later has the `files` and
# `dns` name-service modules inside libc.so.6, so no libnss_*.so is needed; the script refuses an
# older glibc. Run it on the distribution you build with (Debian 12 here): the libraries come from
# this machine, so the image runs wherever the binary did.
#
# Usage: deploy/image/stage.sh [BINARY]   (default: builds target/release/ivr-bridge)
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly ROOTFS=target/image-rootfs

if [[ $# -ge 1 ]]; then
  binary=$1
else
  echo "stage: cargo build --release --locked"
  cargo build --release --locked
  binary=target/release/ivr-bridge
fi
[[ -x $binary ]] || { echo "stage: no executable at $binary" >&2; exit 1; }

# `sed -n 1p`, not `head -n1`: head exits after one line, and under `pipefail` the SIGPIPE that
# ldd may then get ends this script with no message (seen once in CI).
glibc=$(ldd --version | sed -n 1p | grep -oE '[0-9]+\.[0-9]+$')
if [[ $(printf '%s\n2.34\n' "$glibc" | sort -V | sed -n 1p) != 2.34 ]]; then
  echo "stage: glibc $glibc is older than 2.34: its name service needs libnss_*.so, not staged" >&2
  exit 1
fi

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS/etc"
# Without the line tables the release profile keeps (50 MB of the 63): the symbols stay, so a
# backtrace still names its functions.
strip --strip-debug -o "$ROOTFS/ivr-bridge" "$binary"
chmod 0755 "$ROOTFS/ivr-bridge"

# Every library the binary loads, the dynamic loader included, at the path ldd names (`cp -L`:
# the file itself, not the distribution's symlink to it).
libraries=$(ldd "$binary" | grep -oE '/[^ ]+' | sort -u)
for lib in $libraries; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done

# The Dockerfile's USER is numeric (Kubernetes checks runAsNonRoot against it); these give the
# numbers names for tools that look them up.
cat >"$ROOTFS/etc/passwd" <<'PASSWD'
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
PASSWD
cat >"$ROOTFS/etc/group" <<'GROUP'
nogroup:x:65534:
GROUP
cat >"$ROOTFS/etc/nsswitch.conf" <<'NSS'
passwd: files
group:  files
hosts:  files dns
NSS
# Container runtimes (Docker, podman, Kubernetes) mount their own /etc/hosts and /etc/resolv.conf
# over these; this one serves plain `chroot` and any runtime that does not.
cat >"$ROOTFS/etc/hosts" <<'HOSTS'
127.0.0.1 localhost
HOSTS

echo "stage: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1)):"
(cd "$ROOTFS" && find . -type f | sort | sed 's/^\./  /')
