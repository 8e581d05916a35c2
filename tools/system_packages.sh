#!/usr/bin/env bash
# Installs the Debian packages listed in tools/system-packages.txt that are missing.
# Fast when all are present (one dpkg-query). Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' tools/system-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null 2>&1 || {
  echo "setup: missing system packages (${missing[*]}) and no apt-get to install them" >&2
  exit 1
}
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "setup: missing system packages; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  }
  sudo="sudo"
fi
echo "setup: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
# No init system here: keep package scripts from starting services; the project starts
# what it needs itself, on its own ports, and stops only what it started.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 0755 "$policy"
  created_policy=1
fi
aptlog=$(mktemp)
cleanup() {
  [ -z "$created_policy" ] || $sudo rm -f "$policy"
  rm -f "$aptlog"
}
trap cleanup EXIT
if ! $sudo apt-get install "${apt_opts[@]}" "${missing[@]}" >"$aptlog" 2>&1; then
  $sudo apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
  $sudo apt-get install "${apt_opts[@]}" "${missing[@]}" >"$aptlog" 2>&1 || {
    tail -20 "$aptlog" >&2
    echo "setup: apt-get install failed for: ${missing[*]}" >&2
    exit 1
  }
fi
