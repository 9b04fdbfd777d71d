#!/usr/bin/env bash
# Regenerates kernel-text.bin: the function layout of a real distribution kernel's core text,
# for the benches (benches/src/real.rs decodes it). Needs Debian's package archive (apt-get),
# python3, binutils' nm, and about 1 GB of scratch space; the benches themselves never need
# the network.
#
# Source: Debian 12's linux-image-$VERSION-dbg (the unstripped vmlinux of the signed
# linux-image-$VERSION package). `nm -S` gives every function's start and its real size (not the
# distance to the next symbol, which would include alignment padding). Kept: sized T/t symbols in
# [_stext, _etext), one per start (the largest of aliases), none overlapping the previous one.
#
# Format (little endian): b"LPKTEXT1", u64 _stext, u64 _etext, u32 count, then per function in
# address order: LEB128 gap (start - previous end; the first from _stext), LEB128 size, u8
# group bits (bit 0: a `tcp_` function, bit 1: `bpf`, bit 2: `acpi`, bit 3: networking, any of
# tcp_ udp_ ip_ ipv6_ inet_ inet6_ sock_ sk_ skb_ __skb_ netif_ net_ neigh_ dev_ tcp udp).
# The version string is written next to it as kernel-text.version.
set -euo pipefail
VERSION="${1:-6.1.0-57-amd64}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download "linux-image-$VERSION-dbg"
dpkg-deb --fsys-tarfile linux-image-"$VERSION"-dbg_*.deb | tar -x --wildcards "./usr/lib/debug/boot/vmlinux-$VERSION"
nm -S --defined-only "usr/lib/debug/boot/vmlinux-$VERSION" > nm.txt
python3 - nm.txt "$here/kernel-text.bin" <<'PY'
import struct, sys
rows = [l.split() for l in open(sys.argv[1])]
addr = {r[-1]: int(r[0], 16) for r in rows if len(r) >= 3}
lo, hi = addr["_stext"], addr["_etext"]
best = {}
for r in rows:
    if len(r) == 4 and r[2] in "Tt":
        s, n, name = int(r[0], 16), int(r[1], 16), r[3]
        if lo <= s < hi and n > 0 and (s not in best or n > best[s][0]):
            best[s] = (n, name)
net = ("tcp_", "udp_", "ip_", "ipv6_", "inet_", "inet6_", "sock_", "sk_", "skb_", "__skb_", "netif_",
       "net_", "neigh_", "dev_", "tcp", "udp")
def groups(name):
    g = 0
    if name.startswith("tcp_"): g |= 1
    if name.startswith("bpf"): g |= 2
    if name.startswith("acpi"): g |= 4
    if name.startswith(net): g |= 8
    return g
def leb(v):
    out = bytearray()
    while True:
        b = v & 0x7f
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)
body, end, count = bytearray(), lo, 0
for s in sorted(best):
    n, name = best[s]
    if s < end:
        continue  # overlaps the previous function (nested or alias with another size)
    n = min(n, hi - s)
    body += leb(s - end) + leb(n) + bytes([groups(name)])
    end, count = s + n, count + 1
with open(sys.argv[2], "wb") as f:
    f.write(b"LPKTEXT1" + struct.pack("<QQI", lo, hi, count) + body)
print(f"{count} functions in [{lo:#x}, {hi:#x}), {len(body) + 28} bytes")
PY
echo "linux-image-$VERSION-dbg $(dpkg-deb -f linux-image-"$VERSION"-dbg_*.deb Version)" > "$here/kernel-text.version"
