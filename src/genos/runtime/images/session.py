"""The guest side of the guest contract: what the base and desktop layers set up.

PID 1 is tini; it runs ``/usr/local/bin/genos-session`` as the unprivileged
``user`` (uid 1000). The session starts Xvnc on a unix socket first, so the RFB
banner answers as early as possible, then the window manager, then the apps.
The driver passes the settings as environment variables (:func:`session_env`)
and bind-mounts a host directory on :data:`DISPLAY_DIR`.
"""

from __future__ import annotations

from genos.runtime.images.shell import shell_env
from genos.runtime.images.steps import FileSpec, Step
from genos.spec import EnvironmentSpec, Protocol

DISPLAY_DIR = "/run/genos-display"
RFB_SOCKET = "rfb.sock"
RDP_SOCKET = "rdp.sock"  # xrdp, when the spec asks for RDP
RDP_CERT = "rdp.crt"  # its TLS certificate (the key stays in the guest)
AUDIO_SOCKET = "audio.sock"  # Ogg Opus of the sound server's output, one encoder per viewer
AUDIO_PATH = "/usr/local/bin/genos-audio"
MIC_SOCKET = "mic.sock"  # a viewer's microphone in: 16 kHz mono s16le PCM (security.microphone)
MIC_PATH = "/usr/local/bin/genos-mic"
VIDEO_SOCKET = "video.sock"  # H.264 of the screen, one encoder per viewer (video mode)
VIDEO_PATH = "/usr/local/bin/genos-video"
RECORD_SOCKET = "record.sock"  # an MP4 of screen and sound (security.recording)
RECORD_PATH = "/usr/local/bin/genos-record"
SESSION_PATH = "/usr/local/bin/genos-session"
SESSION_ARGV = ("/usr/bin/tini", "-g", "--", SESSION_PATH)
USER_NAME = "user"
USER_UID = 1000
USER_HOME = "/home/user"
MACHINE_ID = "/tmp/.genos-machine-id"  # noqa: S108 - in the guest, whose /tmp is its own

SESSION_SCRIPT = r"""#!/bin/sh
# genos-session: GenOS's guest session (ARCHITECTURE.md, guest contract).
# Runs as the unprivileged user under tini. Xvnc comes first, on a unix socket
# only, so the RFB banner answers as early as possible; then the window
# manager, then the apps. Settings, from the environment the driver sets:
#   GENOS_RESOLUTION   WIDTHxHEIGHT (1280x800)
#   GENOS_WM           openbox | icewm | fluxbox | xfce
#   GENOS_APPS         one shell command per line, started in order
#   GENOS_APP_NAMES    their names, one per line (the shell's launchers)
#   GENOS_SHELL        0: no panel or wallpaper (openbox only; default 1)
#   GENOS_HEADLESS     1: no window manager and no apps, only a terminal
#   GENOS_DISPLAY_DIR  where rfb.sock goes (/run/genos-display)
#   GENOS_RFB_MODE     mode of rfb.sock (0600)
#   GENOS_RDP          1: also serve RDP (xrdp) on rdp.sock beside rfb.sock
#   GENOS_MICROPHONE   1: a microphone source fed from mic.sock beside rfb.sock
#   GENOS_RECORDING    1: serve record.sock (genos-record: an MP4 of screen and sound)
set -u

start_apps() {
    while IFS= read -r cmd; do
        [ -n "$cmd" ] && sh -c "$cmd" &
    done <<EOF
${GENOS_APPS:-}
EOF
}

if [ "${GENOS_SESSION_PART:-}" = apps ]; then  # openbox --startup: only the apps
    unset GENOS_SESSION_PART
    if [ "${GENOS_SHELL:-1}" = 1 ] && command -v genos-shell >/dev/null 2>&1; then
        genos-shell start &
    fi
    start_apps
    exit 0
fi

resolution=${GENOS_RESOLUTION:-1280x800}
wm=${GENOS_WM:-openbox}
headless=${GENOS_HEADLESS:-0}
dir=${GENOS_DISPLAY_DIR:-/run/genos-display}
sock=$dir/rfb.sock
export DISPLAY=:0
export HOME="${HOME:-/home/user}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"

# /tmp is a fresh tmpfs (mode 1777): X clients find the server here.
mkdir -p /tmp/.X11-unix "$XDG_RUNTIME_DIR" "$dir"
chmod 1777 /tmp/.X11-unix 2>/dev/null
chmod 0700 "$XDG_RUNTIME_DIR"
rm -f "$sock"

# No TCP (-rfbport -1, -nolisten tcp); the gateway authenticates. With RDP,
# xrdp's VNC module (TCP only) needs the display on the env's own loopback.
rfbport=-1
[ "${GENOS_RDP:-0}" = 1 ] && rfbport="5900 -interface 127.0.0.1"
# shellcheck disable=SC2086 # rfbport is two words with RDP
Xvnc :0 -rfbunixpath "$sock" -rfbunixmode "${GENOS_RFB_MODE:-0600}" -rfbport $rfbport \
    -nolisten tcp -SecurityTypes None -AlwaysShared -geometry "$resolution" \
    -depth 24 -desktop genos &
xvnc=$!
xrdp_pid=
trap 'kill -TERM "$xvnc" $xrdp_pid 2>/dev/null' TERM INT HUP

# RDP: xrdp on a unix socket beside rfb.sock, TLS with a key made here (no two
# environments share one), straight into this desktop through Xvnc: the
# gateway's token is the authentication, as for RFB. No channels are carried
# (clipboard, drives, sound, printers): nothing crosses but picture and input.
start_xrdp() {
    conf=$XDG_RUNTIME_DIR/xrdp
    mkdir -p "$conf"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=genos \
        -keyout "$conf/key.pem" -out "$dir/rdp.crt" 2>/dev/null || return
    cat >"$conf/xrdp.ini" <<EOF
[Globals]
ini_version=1
fork=false
port=unix://.$dir/rdp.sock
security_layer=tls
crypt_level=high
ssl_protocols=TLSv1.2, TLSv1.3
certificate=$dir/rdp.crt
key_file=$conf/key.pem
autorun=genos
require_credentials=false
allow_channels=true
allow_multimon=false
bitmap_cache=true
bitmap_compression=true
bulk_compression=true
max_bpp=24
new_cursors=true
hidelogwindow=true
tcp_nodelay=true
[Logging]
LogFile=/dev/null
LogLevel=WARNING
EnableSyslog=false
EnableConsole=true
ConsoleLevel=WARNING
[Channels]
rdpdr=false
rdpsnd=false
drdynvc=false
cliprdr=false
rail=false
xrdpvr=false
tcutils=false
[genos]
name=GenOS
lib=libvnc.so
username=na
password=na
ip=127.0.0.1
port=5900
EOF
    rm -f "$dir/rdp.sock"
    /usr/sbin/xrdp --nodaemon --config "$conf/xrdp.ini" &
    xrdp_pid=$!
}

# X clients need the X socket, which Xvnc makes after the RFB one.
n=0
while [ ! -S /tmp/.X11-unix/X0 ] && [ "$n" -lt 400 ]; do
    kill -0 "$xvnc" 2>/dev/null || break
    n=$((n + 1))
    sleep 0.05
done

[ "${GENOS_RDP:-0}" = 1 ] && start_xrdp

cd "$HOME" || cd /
# D-Bus wants a machine id; each environment gets its own (the image's
# /var/lib/dbus/machine-id points here), so no two share one.
[ -s /tmp/.genos-machine-id ] || dbus-uuidgen >/tmp/.genos-machine-id 2>/dev/null
if command -v dbus-launch >/dev/null 2>&1; then
    eval "$(dbus-launch --sh-syntax)"
fi

# Sound: PulseAudio with one null sink that every app plays into; each viewer
# that opens audio.sock (beside rfb.sock) gets a fresh encoder of its monitor
# (genos-audio: Opus in Ogg, 20 ms a page), so no stale sound is buffered.
# With GENOS_MICROPHONE=1, what a viewer writes to mic.sock (genos-mic: 16 kHz
# mono PCM) plays into a second null sink whose monitor is the default source,
# "Microphone": apps record the viewer, and the viewer does not hear itself.
if command -v pulseaudio >/dev/null 2>&1 && command -v socat >/dev/null 2>&1; then
    set -- -L "module-null-sink sink_name=genos rate=48000 sink_properties=device.description=GenOS"
    if [ "${GENOS_MICROPHONE:-0}" = 1 ]; then
        feed="sink_name=genos_mic rate=16000 channels=1"
        mic="source_name=genos_mic_in master=genos_mic.monitor"
        set -- "$@" -L "module-null-sink $feed sink_properties=device.description=Mic-feed" \
            -L "module-remap-source $mic source_properties=device.description=Microphone"
    fi
    pulseaudio --daemonize=no -n --exit-idle-time=-1 --realtime=no --high-priority=no \
        --disable-shm=yes --log-target=stderr --log-level=error \
        "$@" -L module-native-protocol-unix >/dev/null 2>&1 &
    set --
    rm -f "$dir/audio.sock"
    socat "UNIX-LISTEN:$dir/audio.sock,fork,perm=${GENOS_RFB_MODE:-0600}" \
        EXEC:/usr/local/bin/genos-audio >/dev/null 2>&1 &
    if [ "${GENOS_MICROPHONE:-0}" = 1 ]; then
        # One player for the session, fed through a FIFO by whichever viewer speaks
        # (genos-mic): a stream that stays connected keeps the null sink's blocks
        # short, where one made per viewer would start a second or two behind and
        # stay that far behind. Its stdin is the FIFO opened read-write, so it
        # never sees an end between viewers.
        rm -f /tmp/.genos-mic && mkfifo -m 0600 /tmp/.genos-mic
        (n=0
         until pactl info >/dev/null 2>&1 || [ "$n" -ge 100 ]; do n=$((n + 1)); sleep 0.1; done
         pactl set-default-sink genos && pactl set-default-source genos_mic_in
         exec pacat --playback --device=genos_mic --raw --format=s16le --rate=16000 \
             --channels=1 --latency-msec=60 <>/tmp/.genos-mic) >/dev/null 2>&1 &
        rm -f "$dir/mic.sock"
        socat "UNIX-LISTEN:$dir/mic.sock,fork,perm=${GENOS_RFB_MODE:-0600}" \
            EXEC:/usr/local/bin/genos-mic >/dev/null 2>&1 &
    fi
fi

# Video: each viewer that opens video.sock gets its own H.264 encoder of the
# screen (genos-video), so a viewer's frame rate and bitrate are its own and
# nothing is encoded for nobody. With GENOS_RECORDING=1, record.sock makes an
# MP4 of the screen and its sound (genos-record).
if command -v gst-launch-1.0 >/dev/null 2>&1 && command -v socat >/dev/null 2>&1; then
    rm -f "$dir/video.sock" "$dir/record.sock"
    socat "UNIX-LISTEN:$dir/video.sock,fork,perm=${GENOS_RFB_MODE:-0600}" \
        EXEC:/usr/local/bin/genos-video >/dev/null 2>&1 &
    if [ "${GENOS_RECORDING:-0}" = 1 ]; then
        socat "UNIX-LISTEN:$dir/record.sock,fork,perm=${GENOS_RFB_MODE:-0600}" \
            EXEC:/usr/local/bin/genos-record >/dev/null 2>&1 &
    fi
fi

# Apps start only once the window manager is up: a window mapped while the
# WM is still starting can be lost (it stays unmapped and the screen black).
wm_ready() {
    n=0
    while [ "$n" -lt 60 ]; do
        if command -v xprop >/dev/null 2>&1; then
            xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q "window id" && return 0
        fi
        n=$((n + 1))
        sleep 0.05
    done
}

if [ "$headless" = 1 ]; then
    xterm -maximized &
else
    case $wm in
        # openbox runs the apps itself (this script again) once it manages the screen.
        openbox)
            rc=/etc/genos/openbox/rc.xml
            [ -f "$rc" ] && set -- --config-file "$rc"
            GENOS_SESSION_PART=apps openbox "$@" --startup "$0" & ;;
        icewm) icewm-session & wm_ready; start_apps ;;
        fluxbox) fluxbox & wm_ready; start_apps ;;
        xfce) xfce4-session & wm_ready; start_apps ;;
        *) echo "genos-session: unknown window manager $wm" >&2; start_apps ;;
    esac
fi

# The session lives as long as the display server does.
status=0
while kill -0 "$xvnc" 2>/dev/null; do
    wait "$xvnc"
    status=$?
done
exit "$status"
"""

BASE_DPKG_CONFIG = """\
# GenOS: environments have no manuals; copyright files stay.
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
"""

BASE_APT_CONFIG = """\
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dpkg::Use-Pty "0";
"""


AUDIO_SCRIPT = r"""#!/bin/sh
# genos-audio: one viewer's sound, the null sink's monitor as Ogg Opus on stdout
# (48 kHz stereo, 64 kbit/s, 20 ms packets, each page out at once); started by
# socat per viewer. GStreamer's opusenc and oggmux, since opus-tools' opusenc
# holds about two seconds before it writes anything.
exec 2>/dev/null
# The sound server may still be starting when the first viewer comes.
n=0
until pactl info >/dev/null 2>&1 || [ "$n" -ge 100 ]; do n=$((n + 1)); sleep 0.1; done
parec --device=genos.monitor --raw --format=s16le --rate=48000 --channels=2 \
    --latency-msec=20 |
    gst-launch-1.0 -q fdsrc fd=0 blocksize=3840 \
        ! rawaudioparse format=pcm pcm-format=s16le sample-rate=48000 num-channels=2 \
        ! audioconvert ! opusenc bitrate=64000 frame-size=20 \
        ! oggmux max-delay=0 max-page-delay=0 ! fdsink fd=1 sync=false
"""


MIC_SCRIPT = r"""#!/bin/sh
# genos-mic: one viewer's microphone, 16 kHz mono s16le PCM on stdin, into the
# session's player of the genos_mic sink (whose monitor is the default source)
# through its FIFO; started by socat per viewer. One viewer at a time: a second
# one finds the lock held and is hung up on.
exec 2>/dev/null
exec flock -n /tmp/.genos-mic.lock cat >/tmp/.genos-mic
"""


SCREEN_SIZE = r"""# The screen's size rounded down to even numbers (H.264's 4:2:0 needs them),
# as the last pixel's coordinates: "<x> <y>".
screen_end() {
    xwininfo -root 2>/dev/null | awk '/Width:/ {w = $2} /Height:/ {h = $2}
        END { if (w >= 2 && h >= 2) print int(w / 2) * 2 - 1, int(h / 2) * 2 - 1 }'
}
"""


VIDEO_SCRIPT = (
    r"""#!/bin/sh
# genos-video: one viewer's video of the screen on stdout, H.264 constrained
# baseline in Annex B, one frame (access unit) per multipart part with its
# Content-Length (boundary "genos"), so the gateway passes each frame on the
# moment it is whole: a key frame first, then intra refresh every 10 s (no
# later key frames, so no frame is many times the size of the others; a viewer
# that loses its place gets a new encoder, not a refresh); started by socat per
# viewer. `superfast` over `ultrafast`, and a refresh every 10 s rather than
# 2 s: a quarter more CPU, about a tenth fewer bits for a better picture
# (bench/video.py). Its first line in is "<frames a second> <kbit/s>" (1-60,
# 50-20000); anything else ends it. The pointer is not drawn: the viewer
# draws its own.
exec 2>/dev/null
"""
    + SCREEN_SIZE
    + r"""
read -r fps kbps rest || exit 1
case "$fps:$kbps" in *[!0-9:]* | :* | *:) exit 1 ;; esac
[ -z "$rest" ] && [ ${#fps} -le 2 ] && [ ${#kbps} -le 5 ] || exit 1
[ "$fps" -ge 1 ] && [ "$fps" -le 60 ] && [ "$kbps" -ge 50 ] && [ "$kbps" -le 20000 ] || exit 1
end=$(screen_end)
[ -n "$end" ] || exit 1
set -- $end
exec gst-launch-1.0 -q ximagesrc display-name=:0 use-damage=false show-pointer=false \
    endx="$1" endy="$2" ! "video/x-raw,framerate=$fps/1" ! videoconvert \
    ! video/x-raw,format=I420 \
    ! x264enc tune=zerolatency speed-preset=superfast threads=1 bitrate="$kbps" \
        vbv-buf-capacity=300 key-int-max=$((fps * 10)) intra-refresh=true aud=true \
        byte-stream=true \
    ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au \
    ! multipartmux boundary=genos ! fdsink fd=1 sync=false
"""
)


RECORD_SCRIPT = (
    r"""#!/bin/sh
# genos-record: the screen (pointer drawn) and its sound as one MP4, H.264 main
# profile and Opus; started by socat per request. In: "<seconds>\n" (1-600).
# Out: "OK\n" and the file once it is complete, or "ERR <why>\n". One
# recording at a time; the file is removed once sent, or on failure.
exec 2>/dev/null
"""
    + SCREEN_SIZE
    + r"""
# A short answer is held until the client hangs up: socat may drop what a
# child that exits at once wrote.
fail() { echo "ERR $*"; timeout 5 cat >/dev/null; exit 1; }
read -r secs rest || exit 1
case "$secs" in '' | *[!0-9]*) fail "the length is a number of seconds" ;; esac
[ -z "$rest" ] && [ ${#secs} -le 3 ] && [ "$secs" -ge 1 ] && [ "$secs" -le 600 ] ||
    fail "the length is 1 to 600 seconds"
exec 9>/tmp/.genos-record.lock
flock -n 9 || fail "another recording is in progress"
out=/tmp/.genos-record.mp4
trap 'rm -f "$out"' EXIT
rm -f "$out"
end=$(screen_end)
[ -n "$end" ] || fail "the display is not up"
set -- $end
# With a sound server (which may be slow to answer on a busy host), its sound too.
audio=""
n=0
until pactl info >/dev/null 2>&1 || [ "$n" -ge 50 ]; do n=$((n + 1)); sleep 0.1; done
if [ "$n" -lt 50 ]; then
    audio="pulsesrc device=genos.monitor latency-time=20000 num-buffers=$((secs * 50))"
    audio="$audio ! audioconvert ! audioresample"
    audio="$audio ! opusenc bitrate=96000 ! queue ! mux."
fi
# The length is counted in frames and sound buffers (24 and 50 a second), so
# GStreamer's start-up (a second or two) does not eat into it; the streams end
# by themselves and the MP4 is finished. A pipeline that hangs is ended.
timeout -k 5 $((secs + 30)) gst-launch-1.0 -q ximagesrc display-name=:0 \
    use-damage=false show-pointer=true endx="$1" endy="$2" num-buffers=$((secs * 24)) \
    ! video/x-raw,framerate=24/1 ! videoconvert ! video/x-raw,format=I420 \
    ! x264enc tune=zerolatency speed-preset=veryfast threads=1 bitrate=4000 key-int-max=48 \
    ! video/x-h264,profile=main,stream-format=avc,alignment=au ! queue ! mux. \
    $audio mp4mux name=mux faststart=true ! filesink location="$out" >/dev/null
[ -s "$out" ] || fail "the recorder failed"
echo OK
cat "$out"
"""
)


def base_step() -> Step:
    """Configuration every environment shares (neutral host files, lean dpkg/apt)."""
    return Step(
        "genos-base",
        1,
        files=(
            FileSpec("/etc/dpkg/dpkg.cfg.d/90genos", BASE_DPKG_CONFIG),
            FileSpec("/etc/apt/apt.conf.d/90genos", BASE_APT_CONFIG),
            # The driver provides DNS (or none); the build host's must not leak in.
            FileSpec("/etc/resolv.conf", ""),
            FileSpec("/etc/hostname", "genos\n"),
        ),
    )


def desktop_step() -> Step:
    """The session and sound scripts, the unprivileged user and the display socket's mount point."""
    return Step(
        "genos-session",
        3,
        files=(
            FileSpec(SESSION_PATH, SESSION_SCRIPT, 0o755),
            FileSpec(AUDIO_PATH, AUDIO_SCRIPT, 0o755),
            FileSpec(MIC_PATH, MIC_SCRIPT, 0o755),
            FileSpec(VIDEO_PATH, VIDEO_SCRIPT, 0o755),
            FileSpec(RECORD_PATH, RECORD_SCRIPT, 0o755),
        ),
        run=(
            f"getent passwd {USER_NAME} >/dev/null || useradd --uid {USER_UID}"
            f" --user-group --create-home --home-dir {USER_HOME} --shell /bin/bash {USER_NAME}",
            f"install -d -o {USER_UID} -g {USER_UID} -m 0755 {DISPLAY_DIR}",
            f"ln -sf {MACHINE_ID} /var/lib/dbus/machine-id",
        ),
    )


def session_env(spec: EnvironmentSpec) -> dict[str, str]:
    """The environment variables ``genos-session`` reads, for ``spec``.

    Args:
        spec: the environment.

    Returns:
        Variable name -> value; the driver adds them to the session's process.
    """
    # One command per line: a command never spans two.
    commands = [" ".join(app.command.splitlines()) for app in spec.apps if app.command]
    return {
        "GENOS_RESOLUTION": str(spec.display.resolution),
        "GENOS_WM": spec.display.window_manager.value,
        "GENOS_APPS": "\n".join(commands),
        "GENOS_HEADLESS": "1" if spec.display.headless else "0",
        "GENOS_DISPLAY_DIR": DISPLAY_DIR,
        "GENOS_RDP": "1" if spec.display.protocol is Protocol.RDP else "0",
        "GENOS_MICROPHONE": "1" if spec.security.microphone else "0",
        "GENOS_RECORDING": "1" if spec.security.recording else "0",
        "HOME": USER_HOME,
        "USER": USER_NAME,
        **shell_env(spec),
    }
