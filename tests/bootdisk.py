"""A bootable test guest standing in for the fedora-bootc disk (which cannot be built here).

This machine's Debian kernel and a busybox initramfs: virtio modules loaded in
``modprobe --show-depends`` order, DHCP on eth0, and dropbear (plus rsync and git) as the
ssh target, with the user and key the builder found in its ``/config.toml``; tmux, the
stand-in agent (``claude``, tests/fake_claude) and the image's agent hook in its managed
settings, as the real image has them, for agents in the VM; ``/var`` (and the ssh host key
in it) on the disk, kept across a reboot, and stand-ins for what ``vm upgrade`` runs there
(``podman load``, ``bootc``, ``sudo``, ``systemctl reboot``, which really reboots). It
boots under TCG (``type='qemu'``) in seconds.

``template()`` makes, once per clone (``.cache/bootdisk/<key>``), what the fixture builder
image needs: ``boot.fat`` (a FAT16 filesystem with syslinux, the kernel and the initramfs;
made with mkfs.vfat, mcopy and ``syslinux --install`` on the image file: no loop devices)
and ``head.bin`` (the first MiB of the disk: syslinux's MBR and one partition). The builder
copies the key into a copy of ``boot.fat`` with mcopy and writes ``head.bin + boot.fat`` as
qcow2.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rootfs import _libs

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bootdisk"
MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "vfat", "nls_cp437", "nls_ascii")
GUEST_BINARIES = ("/usr/sbin/dropbear", "/usr/bin/dropbearkey", "/usr/bin/rsync", "/usr/bin/git", "/usr/bin/tmux")
TERMINFO = ("d/dumb", "l/linux", "s/screen", "t/tmux", "t/tmux-256color", "x/xterm", "x/xterm-256color")
REPO = Path(__file__).resolve().parent.parent
FAT_MIB = 48

INIT = r"""#!/bin/sh
# the test guest's init: devices, virtio modules, DHCP, the builder's user and key, dropbear
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts; mount -t devpts devpts /dev/pts
while read -r m; do insmod "/modules/$m" 2>/dev/null; done </modules/order
hostname devbox-guest
ip link set lo up
for _ in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -t 30 -T 1 -b
for _ in $(seq 50); do [ -b /dev/vda1 ] && break; sleep 0.1; done
mkdir -p /boot && mount -t vfat -o rw,uid=1000,gid=1000,umask=022 /dev/vda1 /boot
# /var persists on the disk, as a bootc VM's does across upgrades (the FAT partition holds it)
mkdir -p /boot/var/log /boot/var/lib && mount --bind /boot/var /var
# bootc's stand-in: a staged deployment becomes the booted one at boot
b=/var/lib/standin/bootc; [ -f "$b/staged" ] && mv "$b/staged" "$b/booted"
mkdir -p /run && chmod 1777 /run
# `systemctl reboot` (the stand-in, run as the user) asks; root reboots for real
( while :; do [ -e /run/standin-reboot ] && { sync; umount /var; umount /boot; reboot -f; }; sleep 1; done ) &
user=$(cat /boot/devbox/user 2>/dev/null || echo dev)
echo "$user:x:1000:1000::/home/$user:/bin/sh" >>/etc/passwd
echo "$user:x:1000:" >>/etc/group
mkdir -p "/home/$user/.ssh"
cp /boot/devbox/authorized_keys "/home/$user/.ssh/authorized_keys"
chmod 700 "/home/$user" "/home/$user/.ssh"; chmod 600 "/home/$user/.ssh/authorized_keys"
chown -R 1000:1000 "/home/$user"
mkdir -p /var/lib/dropbear  # the host key survives a reboot, as /etc/ssh's does in a bootc VM
[ -s /var/lib/dropbear/host_key ] || dropbearkey -t ed25519 -f /var/lib/dropbear/host_key >/dev/null 2>&1
echo "devbox-guest host key: $(dropbearkey -y -f /var/lib/dropbear/host_key | grep ^ssh-)"
dropbear -r /var/lib/dropbear/host_key -p 22 -E 2>>/var/log/dropbear.log
echo "devbox-guest ready"
exec sh -c 'while :; do sleep 3600; done'
"""

# what `vm upgrade` runs in the VM: podman load, bootc, sudo and systemctl, as stand-ins
# recording what they were asked (the guest's /var/lib/standin) and, for reboot, rebooting
STAND_INS = {
    "podman": r"""#!/bin/sh
case "$1" in
load) n=$(wc -c | tr -d ' '); mkdir -p /var/lib/standin; echo "$n" >/var/lib/standin/loaded-bytes
      echo "Loaded image: (stand-in, $n bytes)";;
*) echo "podman (stand-in): only load" >&2; exit 125;;
esac
""",
    "bootc": r"""#!/bin/sh
d=/var/lib/standin/bootc; mkdir -p "$d"; echo "$*" >>"$d/calls"
case "$1" in
status) printf '{"status":{"booted":{"image":{"image":{"image":"%s"}}}}}\n' "$(cat "$d/booted" 2>/dev/null)";;
switch) eval "img=\${$#}"; echo "$img" >"$d/staged";;
upgrade) cat "$d/booted" >"$d/staged";;
*) exit 1;;
esac
""",
    "sudo": '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n',
    "systemctl": '#!/bin/sh\n[ "$1" = reboot ] && : >/run/standin-reboot\n',
}

UDHCPC = r"""#!/bin/sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    ;;
esac
"""

SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 1
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 panic=5
"""


def _kernel() -> tuple[str, str]:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise RuntimeError("no /boot/vmlinuz-*: apt install linux-image-amd64 (.ci/run does)")
    kernel = kernels[-1]
    return kernel, kernel.removeprefix("/boot/vmlinuz-")


def _key() -> str:
    kernel, version = _kernel()
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{version}{os.stat(kernel).st_size}".encode())
    return h.hexdigest()[:16]


def _initramfs(version: str, work: Path) -> Path:
    """A gzip'd newc cpio, built from a staging tree with busybox's cpio."""
    root = work / "initramfs"
    for d in ("bin", "sbin", "usr", "etc", "proc", "sys", "dev", "tmp", "var/log", "modules", "home", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    os.symlink("../bin", root / "usr" / "bin")
    for lib in set().union(*(_libs(b) for b in GUEST_BINARIES)):
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    for binary in GUEST_BINARIES:
        dest = root / "bin" / Path(binary).name
        if dest.is_symlink():
            dest.unlink()
        shutil.copy2(binary, dest)
    for alias in ("git-receive-pack", "git-upload-pack"):  # git over ssh runs these by name
        os.symlink("git", root / "bin" / alias)
    from fakeagent import build  # the stand-in agent, and the image's hook where the image has it

    shutil.copy2(build(), root / "bin" / "claude")
    libexec = root / "usr" / "libexec" / "devbox"
    libexec.mkdir(parents=True)
    shutil.copy2(REPO / "bootc" / "agent-hook.sh", libexec / "agent-hook")
    (libexec / "agent-hook").chmod(0o755)
    (root / "etc" / "claude-code").mkdir(parents=True)
    shutil.copy2(REPO / "bootc" / "managed-settings.json", root / "etc" / "claude-code" / "managed-settings.json")
    shutil.copytree("/usr/lib/locale/C.utf8", root / "usr" / "lib" / "locale" / "C.utf8")  # tmux needs UTF-8
    for entry in TERMINFO:
        for base in ("/lib/terminfo", "/usr/share/terminfo"):
            if Path(base, entry).exists():
                (root / "lib" / "terminfo" / entry).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(base, entry), root / "lib" / "terminfo" / entry)
                break
    order: list[str] = []
    for module in MODULES:
        deps = subprocess.run(
            ["modprobe", "-S", version, "--show-depends", module], capture_output=True, text=True, check=True
        ).stdout
        for line in deps.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod":
                name = Path(parts[1]).name
                if name not in order:
                    shutil.copy2(parts[1], root / "modules" / name)
                    order.append(name)
    (root / "modules" / "order").write_text("\n".join(order) + "\n")
    (root / "init").write_text(INIT)
    for name, script in STAND_INS.items():
        (root / "bin" / name).unlink(missing_ok=True)
        (root / "bin" / name).write_text(script)
        (root / "bin" / name).chmod(0o755)
    (root / "init").chmod(0o755)
    (root / "etc" / "udhcpc.sh").write_text(UDHCPC)
    (root / "etc" / "udhcpc.sh").chmod(0o755)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shells").write_text("/bin/sh\n")
    (root / "tmp").chmod(0o1777)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
    cpio = subprocess.run(
        ["/bin/busybox", "cpio", "-o", "-H", "newc"], cwd=root, input=files.encode(), capture_output=True, check=True
    ).stdout
    out = work / "initrd.img"
    out.write_bytes(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True).stdout)
    return out


def template() -> Path:
    """``.cache/bootdisk/<key>/`` with ``boot.fat`` and ``head.bin``, made once per clone."""
    kernel, version = _kernel()
    final = CACHE / _key()
    if (final / "head.bin").exists():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE, prefix="tmp-"))
    initrd = _initramfs(version, work)
    fat = work / "boot.fat"
    subprocess.run(["truncate", "-s", f"{FAT_MIB}M", str(fat)], check=True)
    subprocess.run(["mkfs.vfat", "-F", "16", "-n", "DEVBOX", str(fat)], check=True, capture_output=True)
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for src, dest in ((kernel, "vmlinuz"), (str(initrd), "initrd.img"), (str(work / "syslinux.cfg"), "syslinux.cfg")):
        subprocess.run(["mcopy", "-i", str(fat), src, f"::{dest}"], check=True, env=env, capture_output=True)
    subprocess.run(["mmd", "-i", str(fat), "::devbox"], check=True, env=env, capture_output=True)
    subprocess.run(["syslinux", "--install", str(fat)], check=True, capture_output=True)
    head = work / "head.bin"
    subprocess.run(["truncate", "-s", "1M", str(head)], check=True)
    # a whole-disk image only for sfdisk's partition table, then its first MiB is the head
    disk = work / "disk.raw"
    subprocess.run(["truncate", "-s", f"{FAT_MIB + 1}M", str(disk)], check=True)
    subprocess.run(["sfdisk", "-q", str(disk)], input=b"2048,,6,*\n", check=True, capture_output=True)
    mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    with disk.open("r+b") as fh:
        fh.write(mbr[:440])
        fh.seek(0)
        head.write_bytes(fh.read(1024 * 1024))
    disk.unlink()
    shutil.rmtree(work / "initramfs")
    try:
        work.rename(final)
    except OSError:  # another session made it meanwhile
        shutil.rmtree(work, ignore_errors=True)
    return final


def builder_image(podman: str, tmp: Path, tag: str) -> None:
    """The builder stand-in (tests/fixture_builder/bib.sh) whose disks boot: this module's
    template, qemu-img and mtools in a local image ``tag`` (and its base ``tag-base``)."""
    from rootfs import add_binaries, import_base, make_rootfs

    template_dir = template()
    root = tmp / "rootfs"
    make_rootfs(root)
    add_binaries(root, ("/usr/bin/qemu-img", "/usr/bin/mcopy"))
    gconv = Path("/usr/lib/x86_64-linux-gnu/gconv")  # mtools converts names through iconv's code pages
    dest = root / gconv.relative_to("/")
    dest.mkdir(parents=True)
    for name in ("gconv-modules", "gconv-modules.cache", "IBM850.so", "IBM437.so"):
        if (gconv / name).exists():
            shutil.copy2(gconv / name, dest / name)
    if (gconv / "gconv-modules.d").is_dir():
        shutil.copytree(gconv / "gconv-modules.d", dest / "gconv-modules.d")
    shutil.copy2(REPO / "tests" / "fixture_builder" / "bib.sh", root / "bin" / "bootc-image-builder")
    (root / "fixture").mkdir()
    for name in ("boot.fat", "head.bin"):
        shutil.copy2(template_dir / name, root / "fixture" / name)
    import_base(podman, root, f"{tag}-base")
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f'FROM {tag}-base\nENTRYPOINT ["/bin/bootc-image-builder"]\n')
    res = subprocess.run([podman, "build", "-q", "-t", tag, str(ctx)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"the bootable builder stand-in did not build: {res.stderr}")
