#!/usr/bin/env bash
# System packages the test suite drives: Debian's chromium (admin browser
# tests through playwright), bubblewrap (the sandboxed process runtime), and
# for the microvm runtime QEMU (qemu-system-x86, qemu-utils), socat (its
# per-connection forwards) and what builds its image from Debian packages
# (mmdebstrap; e2fsprogs for mke2fs; the kernel package itself is fetched
# with `apt-get download` by the build); cpio, with which a test reads the
# initramfs back as the kernel would; podman (the container executor, daemonless) with runc
# (crun refuses hosts with hybrid cgroups; the tests' containers.conf picks runc).
# Installs what is missing when run as root; otherwise says what to install.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v mke2fs >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
# The packager cross-compiles Go scenarios on the drones (deployments/packaging/steps.py).
command -v go >/dev/null 2>&1 || missing+=(golang-go)
# apt-cache must know the kernel package the image build downloads.
apt-cache show linux-image-amd64 >/dev/null 2>&1 || need_update=1
[ ${#missing[@]} -eq 0 ] && [ -z "${need_update:-}" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if [ ${#missing[@]} -eq 0 ]; then
    apt-get update -qq >/dev/null
    exit 0
  fi
  echo "[swarm] installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[swarm] missing system packages: ${missing[*]} (install them with your package manager)" >&2
  exit 1
fi
