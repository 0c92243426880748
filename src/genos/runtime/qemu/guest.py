"""The guest side of the QEMU tiers: the initramfs ``/init`` and the root's init.

Both tiers boot Debian's kernel directly (``-kernel``/``-initrd``). The
initramfs GenOS builds (:mod:`genos.runtime.qemu.image`) holds only a static
busybox, the kernel modules below and :data:`INITRAMFS_INIT`, which loads them,
mounts ``/dev/vda`` (ext4) and switches to it, running tini as PID 1 with
:data:`VM_INIT` under it. There is no systemd and no udev: under TCG a lean
init reaches the desktop in seconds instead of minutes.

``genos-vm-init`` reads its settings from the fw_cfg file
``opt/org.genos/config`` (shell variables, see :func:`guest_config`), brings
up the network QEMU's tap gives it, starts Xorg on the virtio GPU (QEMU's VNC
server shows that framebuffer and feeds the virtio keyboard and tablet), says
``genos: display-ready`` on the serial console once the X socket is there,
then runs the window manager and apps as the unprivileged user. It also
serves a root command channel on the virtio-serial port
``org.genos.agent`` (host side: a unix socket only root can open) and powers
off cleanly when the ACPI power button is pressed (QMP ``system_powerdown``).
It names the virtio-serial ports as udev would (``/dev/virtio-ports/NAME``).

SPICE's agent: a ``vm`` whose spec wants it (:func:`spice_agent`) has
``spice-vdagent`` in its image and the port :data:`SPICE_PORT`; when that port
is there, the init runs ``spice-vdagentd`` (foreground, no logind: ``-x
-X``) and the session runs the one ``spice-vdagent`` of the X session, which
shares the clipboard with the SPICE viewer. The daemon takes a single session
agent when it cannot ask logind which session is active (a second one makes
it stop serving both), so the desktop's XDG autostart entry for it is removed.
The pointer stays on the virtio tablet (QEMU's ``agent-mouse=off``), so the
daemon's uinput tablet is a fake one on ``/dev/null``.
"""

from __future__ import annotations

import shlex

from genos.runtime.images.session import USER_HOME, USER_NAME, USER_UID
from genos.spec import Direction, EnvironmentSpec, Protocol, Tier

READY_MARK = "genos: display-ready"
AGENT_PORT = "org.genos.agent"
SPICE_PORT = "com.redhat.spice.0"  # the name spice-vdagentd looks for
AGENT_EXIT = "@genos-exit "
AGENT_READY = "@genos-ready"
FW_CFG_NAME = "opt/org.genos/config"
VM_INIT_PATH = "/usr/local/sbin/genos-vm-init"
VM_SESSION_PATH = "/usr/local/bin/genos-vm-session"

# Loaded in dependency order by the initramfs; the rest of the kernel's
# modules stay in the root (nothing in the guest loads them).
MODULES = (
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_input",
    "virtio_gpu",
    "evdev",
    "button",
    "qemu_fw_cfg",
    "crc32c_generic",
    "ext4",
)

INITRAMFS_INIT = r"""#!/bin/busybox sh
# GenOS initramfs: load virtio and ext4, mount /dev/vda, hand over to tini.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r mod; do insmod "/modules/$mod"; done </modules/load
n=0
while [ ! -b /dev/vda ] && [ "$n" -lt 3000 ]; do n=$((n + 1)); usleep 10000; done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then
    echo "genos: cannot mount the root disk" >/dev/console
    poweroff -f
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /usr/bin/tini -g -- /usr/local/sbin/genos-vm-init
"""

VM_INIT = r"""#!/bin/sh
# genos-vm-init: the session of a GenOS VM (runs as root under tini).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
bb=/usr/bin/busybox
console=/dev/ttyS0
say() { echo "genos: $*" >"$console"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
$bb hostname genos
$bb ip link set lo up

GENOS_RESOLUTION=1280x800 GENOS_WM=openbox GENOS_HEADLESS=0 GENOS_APPS=
GENOS_IP= GENOS_GATEWAY= GENOS_DNS= GENOS_HOSTS=
cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/org.genos/config/raw
[ -r "$cfg" ] && . "$cfg"

if [ -n "$GENOS_IP" ]; then
    $bb ip addr add "$GENOS_IP" dev eth0
    $bb ip link set eth0 up
    [ -n "$GENOS_GATEWAY" ] && $bb ip route add default via "$GENOS_GATEWAY"
fi
: >/etc/resolv.conf
for ns in $GENOS_DNS; do echo "nameserver $ns" >>/etc/resolv.conf; done
printf '127.0.0.1 localhost genos\n%s\n' "$GENOS_HOSTS" >/etc/hosts

# The root command channel (virtio-serial). A read returns EOF while no host
# is connected, and what the host sends while the port is closed is lost: so
# the guest polls, and on each open says "@genos-ready", which the host waits
# for before it sends its one command line.
agent() {
    while :; do
        if exec 3<>"$1"; then
            echo "@genos-ready" >&3
            if IFS= read -r line <&3; then
                # Output goes through a file: a port opens only once, and a
                # process the command leaves running must not hold it.
                sh -c "$line" </dev/null >/run/genos-agent.out 2>&1 3>&-
                status=$?
                cat /run/genos-agent.out >&3
                echo "@genos-exit $status" >&3
            fi
            exec 3>&-
        fi
        $bb usleep 100000
    done
}

# The ACPI power button (QMP system_powerdown): one event, then a clean stop.
stop_all() {
    say "powering off"
    kill -TERM -1 2>/dev/null
    $bb usleep 300000
    sync
    $bb mount -o remount,ro / 2>/dev/null
    $bb poweroff -f
}
watch_button() {
    $bb head -c 24 "$1" >/dev/null && stop_all
}

# Xorg's libinput refuses a device udev has not initialised, and there is no
# udev: write the udev database entries it would (only what libinput reads).
udev_entry() {
    mkdir -p /run/udev/data
    printf 'I:1\nE:ID_INPUT=1\n%b' "$2" >"/run/udev/data/c$(cat "$1/dev")"
}
keyboard= pointer=
for dev in /sys/class/input/event*; do
    [ -e "$dev" ] || continue
    name=$(cat "$dev/device/name" 2>/dev/null)
    node=/dev/input/${dev##*/}
    case $name in
        *"Power Button"*) watch_button "$node" & ;;
        *Keyboard*)
            keyboard=$node
            udev_entry "$dev" 'E:ID_INPUT_KEY=1\nE:ID_INPUT_KEYBOARD=1\n' ;;
        *Tablet*)
            pointer=$node
            # QEMU's tablet is an absolute mouse (no pen): udev calls it a mouse.
            udev_entry "$dev" 'E:ID_INPUT_MOUSE=1\n' ;;
    esac
done
# udev's names for the virtio-serial ports (there is no udev).
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
    name=$(cat "$port/name" 2>/dev/null)
    [ -n "$name" ] && ln -sf "../${port##*/}" "/dev/virtio-ports/$name"
done
[ -e /dev/virtio-ports/org.genos.agent ] && agent /dev/virtio-ports/org.genos.agent &

# The drivers of the sound card and USB controller QEMU adds for SPICE (its
# audio and USB redirection channels); a VM without them loads nothing.
mods=
for dev in /sys/bus/pci/devices/*; do
    case $(cat "$dev/class" 2>/dev/null) in
        0x0403*) mods="$mods snd_hda_intel" ;;
        0x0c0330) mods="$mods xhci_pci" ;;
    esac
done
# shellcheck disable=SC2086 # one module per word
[ -n "$mods" ] && { modprobe -a $mods || $bb modprobe -a $mods; } >/run/modprobe.log 2>&1

# SPICE's agent daemon, when QEMU gives its port (see the module docstring).
spice=/dev/virtio-ports/com.redhat.spice.0
if [ -e "$spice" ] && command -v spice-vdagentd >/dev/null; then
    rm -f /etc/xdg/autostart/spice-vdagent.desktop
    mkdir -p /run/spice-vdagentd
    (while :; do
        spice-vdagentd -x -X -s "$spice" -f -u /dev/null
        $bb usleep 1000000
    done) </dev/null >/run/spice-vdagentd.log 2>&1 &
fi

conf=/run/genos-xorg.conf
{
    echo 'Section "ServerFlags"'
    echo '  Option "AutoAddDevices" "false"'
    echo '  Option "BlankTime" "0"'
    echo '  Option "StandbyTime" "0"'
    echo '  Option "SuspendTime" "0"'
    echo '  Option "OffTime" "0"'
    echo 'EndSection'
    echo 'Section "Device"'
    echo '  Identifier "gpu"'
    echo '  Driver "modesetting"'
    echo '  Option "kmsdev" "/dev/dri/card0"'
    echo 'EndSection'
    echo 'Section "Screen"'
    echo '  Identifier "screen"'
    echo '  Device "gpu"'
    echo 'EndSection'
    echo 'Section "ServerLayout"'
    echo '  Identifier "layout"'
    echo '  Screen "screen"'
    [ -n "$keyboard" ] && echo '  InputDevice "keyboard" "CoreKeyboard"'
    [ -n "$pointer" ] && echo '  InputDevice "pointer" "CorePointer"'
    echo 'EndSection'
    for role in keyboard pointer; do
        eval node=\$$role
        [ -n "$node" ] || continue
        echo 'Section "InputDevice"'
        echo "  Identifier \"$role\""
        echo '  Driver "libinput"'
        echo "  Option \"Device\" \"$node\""
        echo 'EndSection'
    done
} >"$conf"

mkdir -p /tmp/.X11-unix
chmod 1777 /tmp/.X11-unix
# Xorg tells its parent it is ready with SIGUSR1 when it inherits USR1 ignored.
ready=
trap 'ready=1' USR1
(trap '' USR1; exec Xorg :0 vt1 -config "$conf" -nolisten tcp -noreset -novtswitch \
    -logfile /run/Xorg.log 2>/run/Xorg.err) &
xorg=$!
n=0
while [ -z "$ready" ] && [ "$n" -lt 1200 ]; do
    kill -0 "$xorg" 2>/dev/null || break
    n=$((n + 1))
    $bb usleep 50000
done
if [ -n "$ready" ]; then
    say "display-ready"
else
    say "Xorg failed"
    grep -E "EE|WW" /run/Xorg.log >"$console" 2>/dev/null
    dmesg | grep -iE "virtio|drm|input|gpu|mmio" >"$console"
    for d in /sys/bus/virtio/devices/*; do
        echo "$d $(cat $d/device) $(readlink $d/driver)" >"$console"
    done
fi

export DISPLAY=:0 HOME=@HOME@ USER=@USER@ XDG_RUNTIME_DIR=/tmp/runtime-@UID@
export GENOS_HEADLESS GENOS_WM GENOS_APPS
mkdir -p "$XDG_RUNTIME_DIR"
chown @UID@:@UID@ "$XDG_RUNTIME_DIR"
chmod 0700 "$XDG_RUNTIME_DIR"
setpriv --reuid=@UID@ --regid=@UID@ --init-groups @SESSION@ </dev/null >/dev/null 2>&1 &

while kill -0 "$xorg" 2>/dev/null; do wait "$xorg"; done
say "display server exited"
stop_all
"""


VM_SESSION = r"""#!/bin/sh
# genos-vm-session: the window manager and apps of a GenOS VM, as the session user.
cd "$HOME" || cd /
# SPICE's session agent (the clipboard), when the guest has its port.
if [ -e /dev/virtio-ports/com.redhat.spice.0 ] && command -v spice-vdagent >/dev/null; then
    (while :; do
        NO_AT_BRIDGE=1 spice-vdagent -x
        sleep 1
    done) </dev/null >"$XDG_RUNTIME_DIR/spice-vdagent.log" 2>&1 &
fi
if [ "${GENOS_HEADLESS:-0}" = 1 ]; then
    exec xterm -maximized
fi
case ${GENOS_WM:-openbox} in
    openbox) openbox & ;;
    icewm) icewm-session & ;;
    fluxbox) fluxbox & ;;
    xfce) xfce4-session & ;;
esac
printf '%s\n' "${GENOS_APPS:-}" | while IFS= read -r cmd; do
    [ -n "$cmd" ] && sh -c "$cmd" &
done
wait
"""


def spice_agent(spec: EnvironmentSpec) -> bool:
    """Whether a VM of ``spec`` gets SPICE's agent: the clipboard over SPICE.

    Only a ``vm`` served over SPICE whose clipboard may cross both ways. SPICE
    has no direction filter: its server can only let the agent's clipboard
    through or drop it (QEMU's ``disable-copy-paste``), and the agent and
    viewers share both ways. A one-way policy (``to_env``, ``from_env``)
    therefore gets no SPICE clipboard rather than one it could not keep.
    """
    return (
        spec.tier is Tier.VM
        and spec.display.protocol is Protocol.SPICE
        and spec.security.clipboard is Direction.BOTH
    )


def vm_init() -> str:
    """The root's init script, with the session user filled in."""
    return (
        VM_INIT.replace("@HOME@", USER_HOME)
        .replace("@USER@", USER_NAME)
        .replace("@UID@", str(USER_UID))
        .replace("@SESSION@", VM_SESSION_PATH)
    )


def guest_config(
    spec: EnvironmentSpec,
    *,
    address: str | None = None,
    gateway: str | None = None,
    dns: tuple[str, ...] = (),
    hosts: tuple[tuple[str, str], ...] = (),
) -> str:
    """The fw_cfg file ``genos-vm-init`` sources: one shell assignment per setting.

    Args:
        spec: the environment.
        address: the guest's IPv4 address with prefix (``10.213.0.6/30``), if it has a NIC.
        gateway: its default route.
        dns: resolvers for ``/etc/resolv.conf``.
        hosts: ``(name, address)`` pins for ``/etc/hosts``.

    Returns:
        The file's text (every value shell-quoted).
    """
    commands = [" ".join(app.command.splitlines()) for app in spec.apps if app.command]
    values = {
        "GENOS_RESOLUTION": str(spec.display.resolution),
        "GENOS_WM": spec.display.window_manager.value,
        "GENOS_HEADLESS": "1" if spec.display.headless else "0",
        "GENOS_APPS": "\n".join(commands),
        "GENOS_IP": address or "",
        "GENOS_GATEWAY": gateway or "",
        "GENOS_DNS": " ".join(dns),
        "GENOS_HOSTS": "\n".join(f"{ip} {name}" for name, ip in hosts),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
