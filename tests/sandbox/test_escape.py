"""Breakout attempts from inside a real running environment, as root-in-env and as the user.

Each test tries one way out and asserts the safe answer. Root inside holds the
root capability set of :mod:`genos.sandbox.config` (the worst an operator's
``exec`` gives); the user is the session's uid 1000. System calls are tried by
the static C probe (``probes/probe.c``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from genos.runtime.images import Layer
from genos.sandbox import cgroups, config
from tests.sandbox.probes import Env, parse_calls

pytestmark = [pytest.mark.root, pytest.mark.runc]

# linux/capability.h bit numbers.
CAP_BITS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31,
    "CAP_PERFMON": 38, "CAP_BPF": 39,
}  # fmt: skip
DANGEROUS = (
    "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_PTRACE", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_MKNOD", "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_PERFMON",
)  # fmt: skip
ROOT_MASK = sum(1 << CAP_BITS[c] for c in config.ROOT_CAPABILITIES)

# Every call the probe makes that must be refused, for root and the user alike.
REFUSED = (
    "mount", "umount2", "pivot_root", "open_tree", "fsopen", "unshare_user", "unshare_mount",
    "unshare_net", "clone_newuser", "clone_newpid", "setns", "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "ptrace_attach", "process_vm_readv", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "userfaultfd", "acct", "quotactl", "lookup_dcookie", "iopl", "ioperm",
    "create_module", "get_kernel_syms", "nfsservctl", "name_to_handle_at", "open_by_handle_at",
    "personality_no_aslr", "syslog", "io_uring_setup", "chroot", "sethostname",
    "clock_settime", "mknod_block", "mknod_mem", "socket_vsock", "socket_alg", "socket_packet",
    "socket_raw",
)  # fmt: skip


@pytest.fixture(scope="module")
def root_calls(env: Env) -> dict[str, tuple[int, str]]:
    """What the kernel answered the probe's calls as root in the env."""
    result = env.probe("syscalls", root=True)
    assert result.code == 0, result.stderr
    return parse_calls(result.stdout)


@pytest.fixture(scope="module")
def user_calls(env: Env) -> dict[str, tuple[int, str]]:
    """What the kernel answered the probe's calls as the session user."""
    result = env.probe("syscalls")
    assert result.code == 0, result.stderr
    return parse_calls(result.stdout)


def _status(env: Env, *, root: bool) -> dict[str, str]:
    text = env.exec("cat", "/proc/self/status", root=root).stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _ns(env: Env, kind: str) -> tuple[str, str]:
    inside = env.exec("readlink", f"/proc/self/ns/{kind}").stdout.strip()
    return inside, str(Path(f"/proc/self/ns/{kind}").readlink())


# -- namespaces ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pid", "mnt", "net", "ipc", "uts", "cgroup"])
def test_env_has_its_own_namespace(env: Env, kind: str) -> None:
    """Each of pid, mount, network, ipc, uts and cgroup namespaces differs from the host's."""
    inside, host = _ns(env, kind)
    assert inside.startswith(f"{kind}:[")
    assert inside != host


def _needs_userns(env: Env) -> int:
    host_id = env.host_id()
    if host_id is None:
        pytest.skip("this host runs environments without a user namespace")
    return host_id


def test_env_has_its_own_user_namespace(env: Env) -> None:
    """Root inside is mapped to an unprivileged host range: uid_map is '0 <base> 65536'."""
    host_id = _needs_userns(env)
    inside, host = _ns(env, "user")
    assert inside != host
    assert env.exec("cat", "/proc/self/uid_map").stdout.split() == ["0", str(host_id), "65536"]
    assert env.exec("cat", "/proc/self/gid_map").stdout.split() == ["0", str(host_id), "65536"]


def test_env_processes_are_unprivileged_on_the_host(env: Env) -> None:
    """Every process of the env, root-in-env included, has a host uid in its own range."""
    host_id = _needs_userns(env)
    uids = set()
    for pid in cgroups.tasks(env.env_id):
        status = Path(f"/proc/{pid}/status").read_text()
        uids.add(int(status.split("Uid:")[1].split()[1]))  # effective uid
    assert uids
    assert all(host_id <= uid < host_id + 65536 for uid in uids)


def test_files_root_writes_belong_to_an_unprivileged_host_id(env: Env) -> None:
    """A file root-in-env creates in home is owned, on the host, by the env's range, not root."""
    host_id = _needs_userns(env)
    assert env.exec("touch", "/home/user/by-root", root=True).code == 0
    upper = env.driver.paths(env.env_id).upper / "home" / "user" / "by-root"
    assert upper.stat().st_uid == host_id


def test_pid_namespace_hides_host_processes(env: Env) -> None:
    """Only the env's own few processes are visible, and PID 1 is its tini."""
    pids = env.sh("ls -d /proc/[0-9]*").stdout.split()
    assert 3 <= len(pids) <= 20
    assert env.exec("cat", "/proc/1/comm").stdout.strip() == "tini"


def test_kill_cannot_reach_host_processes(env: Env) -> None:
    """Root in the env cannot signal this test's own (host) pid."""
    result = env.exec("kill", "-0", str(os.getpid()), root=True)
    assert result.code != 0


def test_network_namespace_holds_only_loopback(env: Env) -> None:
    """In mode none the env sees exactly one interface, lo, and it is up."""
    lines = env.exec("cat", "/proc/net/dev").stdout.splitlines()[2:]
    assert [line.split(":")[0].strip() for line in lines] == ["lo"]
    assert env.exec("cat", "/sys/class/net/lo/operstate").stdout.strip() in {"unknown", "up"}


def test_hostname_is_the_envs_own(env: Env) -> None:
    """The UTS namespace gives the env genos-<id>, never the host's name."""
    name = env.exec("hostname").stdout.strip()
    assert name == f"genos-{env.env_id}"
    assert name != socket.gethostname()


def test_cgroup_namespace_hides_host_cgroup_paths(env: Env) -> None:
    """/proc/self/cgroup shows '/' for every hierarchy, not /genos/<id>."""
    lines = env.exec("cat", "/proc/self/cgroup").stdout.splitlines()
    assert lines
    assert {line.rsplit(":", 1)[1] for line in lines} == {"/"}


def test_no_tcp_port_is_listening(env: Env) -> None:
    """The display is a unix socket only: no TCP listener in the env (RFB or X11)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        rows = env.exec("cat", table).stdout.splitlines()[1:]
        assert [r for r in rows if r.split()[3] == "0A"] == []


# -- privileges ---------------------------------------------------------------


def test_root_in_env_holds_only_the_minimal_capabilities(env: Env) -> None:
    """Root inside has exactly CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID."""
    status = _status(env, root=True)
    assert int(status["CapEff"], 16) == ROOT_MASK
    assert int(status["CapBnd"], 16) == ROOT_MASK
    assert int(status["CapInh"], 16) == 0
    assert int(status["CapAmb"], 16) == 0


@pytest.mark.parametrize("cap", DANGEROUS)
def test_dangerous_capability_is_out_of_the_bounding_set(env: Env, cap: str) -> None:
    """No process in the env can ever hold SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_PTRACE, ..."""
    assert not int(_status(env, root=True)["CapBnd"], 16) & (1 << CAP_BITS[cap])


def test_session_user_holds_no_capabilities(env: Env) -> None:
    """The session user's effective, permitted, inheritable and ambient sets are empty."""
    status = _status(env, root=False)
    assert [int(status[k], 16) for k in ("CapEff", "CapPrm", "CapInh", "CapAmb")] == [0, 0, 0, 0]


@pytest.mark.parametrize("root", [True, False], ids=["root", "user"])
def test_no_new_privileges_and_seccomp_are_on(env: Env, root: bool) -> None:
    """NoNewPrivs is 1 and a seccomp filter (mode 2) is attached, for root and user."""
    status = _status(env, root=root)
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")


def test_setuid_binary_does_not_raise_privileges(env: Env) -> None:
    """The image's set-uid mount runs as the user and is refused ('must be superuser')."""
    assert env.exec("stat", "-c", "%A", "/usr/bin/mount").stdout.startswith("-rws")
    result = env.sh("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m")
    assert result.code != 0
    assert "must be superuser" in result.stderr


def test_core_dumps_are_off(env: Env) -> None:
    """RLIMIT_CORE is 0, so no process leaves memory images behind."""
    assert env.sh("ulimit -c").stdout.strip() == "0"


# -- system calls ---------------------------------------------------------------


@pytest.mark.parametrize("call", REFUSED)
def test_root_is_refused(root_calls: dict[str, tuple[int, str]], call: str) -> None:
    """Root in the env gets EPERM for every breakout-relevant system call."""
    assert root_calls[call] == (-1, "EPERM")


@pytest.mark.parametrize("call", REFUSED)
def test_user_is_refused(user_calls: dict[str, tuple[int, str]], call: str) -> None:
    """The session user gets EPERM for every breakout-relevant system call."""
    assert user_calls[call] == (-1, "EPERM")


def test_clone3_answers_enosys_so_threads_still_work(
    root_calls: dict[str, tuple[int, str]], user_calls: dict[str, tuple[int, str]]
) -> None:
    """clone3 says ENOSYS (libc falls back to clone), and plain clone still works."""
    for calls in (root_calls, user_calls):
        assert calls["clone3"] == (-1, "ENOSYS")
        assert calls["clone_plain"] == (0, "OK")


def test_ordinary_sockets_still_work(user_calls: dict[str, tuple[int, str]]) -> None:
    """The allowlist keeps AF_UNIX and AF_INET sockets (apps need them)."""
    assert (user_calls["socket_unix"], user_calls["socket_inet"]) == ((0, "OK"), (0, "OK"))


# -- file system ------------------------------------------------------------------


def test_root_filesystem_is_read_only(env: Env) -> None:
    """Even root cannot write to /usr, /etc or / (read-only root)."""
    for path in ("/usr/bin/genos-x", "/etc/genos-x", "/genos-x"):
        result = env.exec("touch", path, root=True)
        assert result.code != 0
        assert "Read-only file system" in result.stderr


def test_lower_layers_stay_untouched(env: Env, desktop_layers: list[Layer]) -> None:
    """A file written in the env lands in its upper dir, never in a shared layer."""
    assert env.sh("echo hi > ~/genos-written").code == 0
    paths = env.driver.paths(env.env_id)
    assert (paths.upper / "home" / "user" / "genos-written").read_text() == "hi\n"
    for layer in desktop_layers:
        assert not (layer.path / "home" / "user" / "genos-written").exists()


def test_proc_sys_is_read_only(env: Env) -> None:
    """Root cannot change kernel settings through /proc/sys."""
    result = env.sh("echo genos > /proc/sys/kernel/hostname", root=True)
    assert result.code != 0
    assert "Read-only file system" in result.stderr


@pytest.mark.parametrize("path", ["/proc/sysrq-trigger", "/proc/irq/default_smp_affinity"])
def test_proc_trigger_files_cannot_be_written(env: Env, path: str) -> None:
    """Root cannot write /proc/sysrq-trigger or /proc/irq (read-only or absent)."""
    assert env.sh(f"echo 1 > {path}", root=True).code != 0


def test_sysfs_is_read_only(env: Env) -> None:
    """/sys is mounted read-only: root cannot create or change anything in it."""
    result = env.exec("touch", "/sys/kernel/genos-x", root=True)
    assert "Read-only file system" in result.stderr
    assert "ro" in _mounts(env)["/sys"]


@pytest.mark.parametrize(
    "path",
    ["/proc/keys", "/proc/timer_list", "/proc/kcore", "/proc/sched_debug", "/proc/interrupts"],
)
def test_masked_proc_files_read_empty(env: Env, path: str) -> None:
    """Masked /proc files read as empty (or do not exist on this kernel)."""
    result = env.exec("cat", path, root=True)
    assert result.stdout == ""


@pytest.mark.parametrize("path", ["/sys/firmware", "/proc/acpi", "/proc/scsi"])
def test_masked_directories_are_empty(env: Env, path: str) -> None:
    """Masked directories show nothing of the host's firmware, ACPI or SCSI."""
    assert env.sh(f"ls -A {path} 2>/dev/null").stdout == ""


def test_dev_holds_only_the_allowlisted_devices(env: Env) -> None:
    """/dev has null, zero, full, random, urandom, tty, ptmx and pts - no disks, no mem."""
    names = set(env.exec("ls", "/dev").stdout.split())
    devices = names - {"fd", "stdin", "stdout", "stderr", "shm", "mqueue", "pts", "core"}
    assert devices == {"null", "zero", "full", "random", "urandom", "tty", "ptmx"}


def test_device_cgroup_allows_only_the_allowlist(env: Env) -> None:
    """The devices cgroup grants read/write only to the allowlist (plus runc's unreachable tun)."""
    text = Path(f"/sys/fs/cgroup/devices/genos/{env.env_id}/devices.list").read_text()
    rw = {line.rsplit(" ", 1)[0] for line in text.splitlines() if "r" in line.rsplit(" ", 1)[1]}
    allowed = {f"c {a}:{'*' if b is None else b}" for _, a, b in cgroups.ALLOWED_DEVICES}
    # runc 1.1 always appends c 10:200 (tun); there is no node for it and
    # using it needs CAP_NET_ADMIN, which nothing in the env can hold.
    assert rw <= allowed | {"c 10:200"}
    assert "a *:* rwm" not in text


def _mounts(env: Env) -> dict[str, set[str]]:
    lines = env.exec("cat", "/proc/mounts").stdout.splitlines()
    return {fields[1]: set(fields[3].split(",")) for fields in (line.split() for line in lines)}


def test_mount_options_of_writable_places(env: Env) -> None:
    """/tmp and /run are nosuid,nodev; /dev/shm adds noexec; home is nosuid,nodev."""
    mounts = _mounts(env)
    for point in ("/tmp", "/run", "/var/tmp", "/home/user", "/run/genos-display"):
        assert {"nosuid", "nodev"} <= mounts[point], point
    assert {"nosuid", "nodev", "noexec"} <= mounts["/dev/shm"]


def test_dev_shm_refuses_to_execute(env: Env) -> None:
    """A binary copied to /dev/shm cannot be executed (noexec)."""
    result = env.sh("cp ~/.genos-probe /dev/shm/p && /dev/shm/p harmless")
    assert result.code != 0
    assert "Permission denied" in result.stderr


def test_host_paths_are_not_visible(env: Env) -> None:
    """Nothing of the host's /run/genos, image cache or data dir is reachable inside."""
    for path in ("/run/genos", "/var/cache/genos-test", str(env.driver.data_root)):
        assert env.exec("test", "-e", path, root=True).code != 0, path


def test_display_dir_holds_only_this_envs_socket(env: Env) -> None:
    """/run/genos-display contains this environment's own display, sound and video sockets
    (rfb.sock, audio.sock, video.sock) and nothing of other environments; no recorder
    (record.sock), since its spec does not allow recording."""
    assert sorted(env.exec("ls", "-A", "/run/genos-display").stdout.split()) == [
        "audio.sock", "rfb.sock", "video.sock"]  # fmt: skip
