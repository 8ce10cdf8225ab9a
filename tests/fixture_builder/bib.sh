#!/bin/sh
# Test stand-in for bootc-image-builder (which cannot be pulled here): the same command line,
# config and output layout, progress lines in its verbose style, and a real qcow2. With a
# boot template in /fixture (tests/bootdisk.py) the disk boots: the config's user and key are
# copied into its FAT partition with mcopy; without one it is blank. FIXTURE_SLEEP (baked into
# a slow variant) makes it take its time; FIXTURE_FAIL makes it fail the way the real one
# reports errors.
set -eu
type="" rootfs="" chown="" image=""
while [ $# -gt 0 ]; do
    case "$1" in
    --type) type=$2; shift 2 ;;
    --rootfs) rootfs=$2; shift 2 ;;
    --progress) shift 2 ;;
    --chown) chown=$2; shift 2 ;;
    --local) echo "warning: --local is deprecated and has no effect"; shift ;;
    -*) echo "error: unknown flag: $1" >&2; exit 2 ;;
    *) image=$1; shift ;;
    esac
done
[ "$type" = qcow2 ] || { echo "error: unsupported --type '$type' (this stand-in makes qcow2)" >&2; exit 2; }
[ -n "$rootfs" ] || { echo "error: no default filesystem type: pass --rootfs" >&2; exit 1; }
[ -f /config.toml ] || { echo "error: no /config.toml" >&2; exit 1; }
grep -q '^\[\[customizations.user\]\]' /config.toml || { echo "error: no user in /config.toml" >&2; exit 1; }
grep -q '^minsize = ' /config.toml || { echo "error: no disk size in /config.toml" >&2; exit 1; }
grep -q "\"$image\"" /var/lib/containers/storage/overlay-images/images.json ||
    { echo "error: cannot find $image in the local containers storage (run as root?)" >&2; exit 1; }
echo "[1/3] Manifest generation for $image ($rootfs)"
sleep "${FIXTURE_SLEEP:-0}"
if [ -n "${FIXTURE_FAIL:-}" ]; then
    echo "error: osbuild failed: $FIXTURE_FAIL" >&2
    exit 1
fi
echo "[2/3] Building qcow2"
mkdir -p /output/qcow2
if [ -f /fixture/boot.fat ]; then
    work=$(mktemp -d)
    sed -n 's/^name = "\(.*\)"$/\1/p' /config.toml | head -n 1 >"$work/user"
    sed -n 's/^key = "\(.*\)"$/\1/p' /config.toml | head -n 1 >"$work/authorized_keys"
    cp /fixture/boot.fat "$work/boot.fat"
    MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.fat" "$work/user" "$work/authorized_keys" ::devbox/
    cat /fixture/head.bin "$work/boot.fat" >"$work/disk.raw"
    qemu-img convert -O qcow2 "$work/disk.raw" /output/qcow2/disk.qcow2
    rm -rf "$work"
else
    qemu-img create -q -f qcow2 /output/qcow2/disk.qcow2 64M
fi
echo "[3/3] Build complete"
[ -z "$chown" ] || chown -R "$chown" /output
