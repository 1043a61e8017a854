#!/usr/bin/env bash
# Installs the Debian 12 packages sensegate needs, only those missing.
# Usage: scripts/install-deps.sh [--dev | --arm64 | --deb]
#   --dev    adds fuzzing/profiling tools and clang (scripts/ci-builds, make fuzz)
#   --arm64  the aarch64 cross toolchain, qemu-user and arm64 -dev packages
#   --deb    what make deb needs (debhelper, lintian; with --arm64 also the
#            arm64 pkg-config that debhelper's CMake cross build calls)
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config python3
  libpaho-mqtt-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler libcunit1-dev
  libcurl4-openssl-dev libyaml-dev libsqlite3-dev libmicrohttpd-dev libjansson-dev
  # Paho's CMake package (found by CMakeLists.txt) asks for OpenSSL's headers;
  # with --no-install-recommends nothing else brings them.
  libssl-dev libsystemd-dev
  mosquitto mosquitto-clients curl openssl valgrind
  # Tests: a real Prometheus scrapes the gateway; the live view runs in tmux.
  prometheus tmux
)
want() { local f; for f in "${flags[@]}"; do [[ $f == "$1" ]] && return 0; done; return 1; }
flags=("$@")
if want --dev; then
  pkgs+=(clang-14 libclang-rt-14-dev valgrind)
fi
if want --deb; then
  pkgs+=(debhelper lintian dpkg-dev fakeroot)
fi
# --arm64 (scripts/ci-arm64, docs/ARM64.md): the cross compiler, qemu-user to
# run the arm64 tests, and the arm64 -dev packages next to the amd64 ones
# (Debian multiarch). They are Multi-Arch: same, so each must be at the same
# version as its amd64 twin; apt upgrades the amd64 one when they differ.
if want --arm64; then
  pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
  want --deb && pkgs+=(pkgconf:arm64)
  for p in libuv1-dev libpaho-mqtt-dev libprotobuf-c-dev libyaml-dev \
           libsqlite3-dev libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libjansson-dev \
           libcunit1-dev libsystemd-dev; do
    pkgs+=("$p:arm64")
  done
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "install-deps: adding the arm64 architecture (dpkg --add-architecture arm64)"
    if [[ $(id -u) -ne 0 ]]; then sudo dpkg --add-architecture arm64; else dpkg --add-architecture arm64; fi
  fi
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt (unattended upgrades, a parallel job) instead of failing.
lock=(-o DPkg::Lock::Timeout=300)
$SUDO apt-get "${lock[@]}" update -qq
$SUDO apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system mosquitto (and prometheus) where systemd runs; our
# tests and demo start their own on free loopback ports and never use them.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now prometheus mosquitto >/dev/null 2>&1 || true
fi
