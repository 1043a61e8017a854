#!/usr/bin/env bash
# Installs the Debian 12 packages sensegate needs, only those missing.
# Usage: scripts/install-deps.sh [--dev]   (--dev adds fuzzing/profiling tools)
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config python3
  libpaho-mqtt-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler libcunit1-dev
  libcurl4-openssl-dev libcyaml-dev libyaml-dev libsqlite3-dev libmicrohttpd-dev libjansson-dev
  # Paho's CMake package (found by CMakeLists.txt) asks for OpenSSL's headers;
  # with --no-install-recommends nothing else brings them.
  libssl-dev libsystemd-dev
  mosquitto mosquitto-clients curl openssl valgrind
  # Tests: a real Prometheus scrapes the gateway; the live view runs in tmux.
  prometheus tmux
)
if [[ "${1:-}" == "--dev" ]]; then
  pkgs+=(clang-14 libclang-rt-14-dev valgrind)
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
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system mosquitto (and prometheus) where systemd runs; our
# tests and demo start their own on free loopback ports and never use them.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now prometheus mosquitto >/dev/null 2>&1 || true
fi
