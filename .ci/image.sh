#!/usr/bin/env bash
# Builds the container image from the root Dockerfile exactly as a user would (after
# deploy/image/stage.sh), with podman and without pulling anything, then proves it: its
# filesystem is exported and tests/container_image.rs runs a call against the server started
# from it with chroot as nobody. Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly IMAGE=localhost/ivr-bridge:ci
readonly STORAGE=$PWD/target/image-storage
readonly EXPORT=$PWD/target/image-export
# podman's own storage under target/, on the vfs driver: no overlay mounts (which a sandbox or a
# container may not allow) and nothing taken from this machine's containers configuration.
podman_() {
  podman --root "$STORAGE/root" --runroot "$STORAGE/run" --storage-driver vfs \
    --events-backend file --cgroup-manager cgroupfs "$@"
}

echo "image: podman"
if ! command -v podman >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq podman >/dev/null
fi
podman --version

echo "image: stage the image's filesystem (release build + libraries)"
deploy/image/stage.sh

echo "image: podman build --pull=never"
# A fresh store each run: podman's database records its own absolute path, so a store left by
# an earlier run in another checkout (or a copied target/) would refuse to open. Building FROM
# scratch needs nothing from it.
rm -rf "$STORAGE"
podman_ build --pull=never --tag "$IMAGE" .
config=$(podman_ image inspect --format \
  'user={{.Config.User}} entrypoint={{json .Config.Entrypoint}} cmd={{json .Config.Cmd}} ports={{json .Config.ExposedPorts}}' \
  "$IMAGE")
echo "image: $config"
expected='user=65534:65534 entrypoint=["/ivr-bridge"] cmd=["serve"] ports={"8080/tcp":{}}'
if [[ $config != "$expected" ]]; then
  echo "image: expected $expected" >&2
  exit 1
fi
podman_ image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"

echo "image: podman create + export → $EXPORT"
container=$(podman_ create "$IMAGE")
rm -rf "$EXPORT"
mkdir -p "$EXPORT"
podman_ export "$container" | tar -x -C "$EXPORT"
podman_ rm "$container" >/dev/null
(cd "$EXPORT" && find . ! -type d | sort | sed 's/^\./  /')

echo "image: a call against the server in the exported image (chroot, uid 65534)"
IVR_BRIDGE_IMAGE_ROOTFS=$EXPORT cargo test --features image-test --test container_image
