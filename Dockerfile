# The ivr-bridge image: the release binary, the shared libraries it loads, and the few files name
# resolution needs; no shell, no package manager. It cannot build the binary itself: first run
#
#   deploy/image/stage.sh        # cargo build --release, then stage target/image-rootfs/
#   docker build -t ivr-bridge . # or: podman build -t ivr-bridge .
#
# (.dockerignore sends only target/image-rootfs/ as the build context.) CI builds exactly this with
# podman and runs a call against the result: see `.ci/run` and tests/container_image.rs.
FROM scratch
COPY target/image-rootfs/ /
# nobody:nogroup. Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/ivr-bridge"]
CMD ["serve"]
