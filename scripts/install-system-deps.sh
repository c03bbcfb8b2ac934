#!/usr/bin/env bash
# Install the Debian packages Corral needs on the host. Idempotent: does nothing when all are
# present. Needs root (CI and `make up` run as root).
set -euo pipefail

PACKAGES=(
  runc debootstrap debian-archive-keyring uidmap iproute2 nftables  # the sandbox, image builds
  lxcfs                                        # a PC's /proc tells its own memory, CPUs, uptime
  xvfb x11-utils xauth openbox xterm xdotool xclip wmctrl fonts-dejavu-core  # pcd tests, bench floor
  python3 python3-pil python3-xlib tini procps # pcd runs on Debian's python3 in its tests
  postgresql                                   # the store's tests run on PostgreSQL too
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages (${missing[*]}); run as root or install them with apt-get" >&2
  exit 1
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
