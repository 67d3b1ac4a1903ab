#!/usr/bin/env bash
# Installs the system libraries micro-seg's GUI tests need on Debian/Ubuntu:
# a virtual X server (Xvfb) with Mesa OpenGL, and the xcb/xkb libraries Qt 6 loads.
# Does nothing when they are already there; uses sudo when not run as root.
set -euo pipefail
pkgs=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
      libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
      libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null || { echo "system-deps: not a Debian/Ubuntu system; install Xvfb + Mesa GL + Qt xcb libs by hand: ${missing[*]}" >&2; exit 0; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
