#!/usr/bin/env bash
# Installs the Debian packages FFCV compiles against, only when one is missing.
# Not root: prints the exact command instead and goes on (the rest of the set-up still works).
set -euo pipefail
pkgs=(pkg-config libturbojpeg0-dev libopencv-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "FFCV needs Debian packages that are missing; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "installing Debian packages for FFCV: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
