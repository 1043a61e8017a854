#!/usr/bin/env bash
# Installs the Debian 12 packages sensegate needs, only those missing.
# Usage: scripts/install-deps.sh [--dev]   (--dev adds fuzzing/profiling tools)
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config python3
  libpaho-mqtt-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler libcunit1-dev
  libcurl4-openssl-dev libcyaml-dev libsqlite3-dev libmicrohttpd-dev libjansson-dev
  mosquitto mosquitto-clients curl
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
# Debian starts a system mosquitto on port 1883 where systemd runs; our tests
# and demo start their own broker on a free loopback port and never use it.
