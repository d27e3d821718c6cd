#!/usr/bin/env bash
# The README's test command: the whole test suite on a machine with only Rust.
#
# A few tests start real servers of their own: the Redis store's tests start `redis-server`, the
# scale-out test runs the shipped nginx configuration in `nginx`. This installs whichever is
# missing (Debian or Ubuntu: apt-get, with sudo unless root), then runs `cargo test` over every
# crate of the workspace; arguments are passed on (`scripts/test.sh --test behaviour gather`).
# `scripts/test.sh --deps-only` stops after the installs: CI (.ci/run) runs that, then `cargo test`
# as its own step, so its log names the step that failed.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)

if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]} (tests start their own; nothing is left running)" >&2
  if ! command -v apt-get >/dev/null; then
    echo "test.sh: no apt-get here: install ${missing[*]} with your package manager, then run this again" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >/dev/null
  "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian starts the packaged services on install; the tests start their own on free ports.
  for service in redis-server nginx; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
      "${sudo[@]}" systemctl stop "$service" || true
    fi
  done
fi

if [ "${1:-}" = "--deps-only" ]; then
  exit 0
fi
exec cargo test "$@"
