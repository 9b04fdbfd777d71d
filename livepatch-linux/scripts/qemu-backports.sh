#!/usr/bin/env bash
# Unpacks QEMU from Debian's bookworm-backports (10.x) into a private directory, without
# touching the system's QEMU 7.2 or its libraries, and prints the directory. Used for the
# multi-threaded TCG runs: QEMU 7.2's MTTCG runs stale translations of code that ftrace has
# just re-patched (see livepatch-linux/README.md, "Emulator limits").
#
# Usage: livepatch-linux/scripts/qemu-backports.sh [DIR]   (default /var/cache/livepatch-kernel/qemu-bpo)
set -euo pipefail
DIR=${1:-/var/cache/livepatch-kernel/qemu-bpo}
if [ -x "$DIR/root/usr/bin/qemu-system-x86_64" ]; then echo "$DIR"; exit 0; fi
LIST=/etc/apt/sources.list.d/livepatch-bookworm-backports.list
[ -f "$LIST" ] || echo "deb http://deb.debian.org/debian bookworm-backports main" > "$LIST"
apt-get update -qq >&2
rm -rf "$DIR.tmp"; mkdir -p "$DIR.tmp"
(cd "$DIR.tmp" && chmod 777 . && apt-get download -q -t bookworm-backports \
    qemu-system-x86 qemu-system-data qemu-system-common seabios >&2)
for d in "$DIR.tmp"/*.deb; do dpkg-deb -x "$d" "$DIR.tmp/root"; done
"$DIR.tmp/root/usr/bin/qemu-system-x86_64" --version >&2
rm -rf "$DIR"; mv "$DIR.tmp" "$DIR"
echo "$DIR"
