"""The syscall allowlist: its shape, its strictness next to Docker's, its effect in a real env."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from genos.sandbox import config, seccomp
from genos.spec import EnvironmentSpec
from tests.sandbox.probes import Env, build_probe, parse_calls

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")

# Docker's default profile (moby profiles/seccomp/default.json): what it allows
# on amd64 without any capability, besides its conditional socket/personality/clone rules.
DOCKER_UNCONDITIONAL = frozenset(
    """
    accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown
    clock_adjtime clock_getres clock_gettime clock_nanosleep close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
    exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat
    fchown fchownat fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr
    fstat fstatfs fsync ftruncate futex futex_waitv futimesat getcpu getcwd getdents
    getdents64 getegid geteuid getgid getgroups getitimer getpeername getpgid getpgrp getpid
    getppid getpriority getrandom getresgid getresuid getrlimit get_robust_list getrusage
    getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getxattr
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
    io_getevents io_pgetevents ioprio_get ioprio_set io_setup io_submit io_uring_enter
    io_uring_register io_uring_setup ipc kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lgetxattr link linkat listen listxattr llistxattr
    lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create memfd_secret mincore
    mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify
    mq_open mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync
    munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat openat2
    pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll
    ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev
    pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg
    remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
    sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp
    select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto setfsgid setfsuid
    setgid setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid
    setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
    setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socketpair
    splice stat statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill
    time timer_create timer_delete timer_getoverrun timer_gettime timer_settime
    timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask uname unlink
    unlinkat utime utimensat utimes vfork vmsplice wait4 waitid write writev
    arch_prctl modify_ldt
    """.split()
)

# What the issue names as "must be blocked".
MUST_BLOCK = frozenset(
    """
    keyctl add_key request_key bpf kexec_load kexec_file_load open_by_handle_at
    perf_event_open ptrace mount umount2 pivot_root unshare init_module finit_module
    delete_module swapon swapoff reboot userfaultfd setns acct quotactl lookup_dcookie iopl
    ioperm create_module get_kernel_syms name_to_handle_at syslog vm86 nfsservctl
    """.split()
)


def _rules(name: str) -> list[dict[str, object]]:
    return [r for r in seccomp.profile("x86_64")["syscalls"] if name in r["names"]]


def test_default_action_is_eperm() -> None:
    """Anything not allowed fails with EPERM (an allowlist, not a denylist)."""
    prof = seccomp.profile("x86_64")
    assert (prof["defaultAction"], prof["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)


def test_only_the_native_architecture_is_allowed() -> None:
    """32-bit and x32 system calls are not in the filter, so they are refused."""
    assert seccomp.profile("x86_64")["architectures"] == ["SCMP_ARCH_X86_64"]


def test_no_syscall_is_both_allowed_and_denied() -> None:
    """ALLOWED and DENIED are disjoint."""
    assert frozenset() == seccomp.ALLOWED & seccomp.DENIED


def test_everything_the_issue_names_is_blocked() -> None:
    """keyctl, bpf, mount, ptrace, setns, ... are neither allowed nor conditionally allowed."""
    conditional = {"socket", "personality", "clone", "clone3"}
    assert MUST_BLOCK & (seccomp.ALLOWED | conditional) == frozenset()
    assert MUST_BLOCK - {"vm86"} <= seccomp.DENIED


def test_at_least_as_strict_as_docker() -> None:
    """Every unconditionally allowed syscall is one Docker's default allows too."""
    assert seccomp.ALLOWED <= DOCKER_UNCONDITIONAL
    stricter = DOCKER_UNCONDITIONAL - seccomp.ALLOWED
    assert {"io_uring_setup", "name_to_handle_at", "fanotify_mark"} <= stricter


@pytest.mark.skipif(not UNISTD.exists(), reason="kernel headers not installed")
def test_every_allowed_name_is_a_real_syscall() -> None:
    """Each allowed name exists in the x86_64 syscall table (no typo silently drops a rule)."""
    names = set(re.findall(r"#define __NR_(\w+) ", UNISTD.read_text()))
    assert seccomp.ALLOWED - names == set()


def test_clone_may_not_create_namespaces() -> None:
    """clone is allowed only when no CLONE_NEW* flag is set (masked compare to 0)."""
    [rule] = _rules("clone")
    assert rule["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]


def test_clone3_answers_enosys() -> None:
    """clone3 gets ENOSYS, so glibc falls back to the filterable clone."""
    [rule] = _rules("clone3")
    assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)


def test_socket_families_are_an_allowlist() -> None:
    """socket is allowed only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK."""
    families = sorted(r["args"][0]["value"] for r in _rules("socket"))  # type: ignore[index]
    assert families == [1, 2, 10, 16]


def test_personality_cannot_turn_off_aslr() -> None:
    """Only the harmless personas are allowed; ADDR_NO_RANDOMIZE (0x40000) is not."""
    personas = {r["args"][0]["value"] for r in _rules("personality")}  # type: ignore[index]
    assert personas == {0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF}


def test_gvisor_config_has_no_guest_seccomp(tmp_path: Path) -> None:
    """For gVisor there is no linux.seccomp: the Sentry, not the host kernel, serves syscalls."""
    layout = config.Layout(
        env_id="0123456789",
        rootfs=tmp_path,
        display_dir=tmp_path,
        hosts_file=tmp_path / "hosts",
        session_args=("/usr/bin/tini", "--", "/bin/true"),
    )
    spec = EnvironmentSpec()
    assert "seccomp" in config.build(spec, layout)["linux"]
    assert "seccomp" not in config.build(spec, layout, with_seccomp=False)["linux"]


# -- in a real environment ----------------------------------------------------------


@pytest.fixture(scope="module")
def host_answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """What this host's kernel answers the harmless calls without a filter."""
    probe = build_probe(tmp_path_factory.mktemp("host-probe"))
    out = subprocess.run([str(probe), "harmless"], capture_output=True, text=True, check=True)
    return parse_calls(out.stdout)


@pytest.fixture(scope="module")
def env_answers(env: Env) -> dict[str, tuple[int, str]]:
    """What the same calls get inside the environment, as the session user."""
    return parse_calls(env.probe("harmless").stdout)


FILTERED = (
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "name_to_handle_at", "open_by_handle_at", "personality_no_aslr", "io_uring_setup",
    "socket_vsock", "socket_alg",
)  # fmt: skip


@pytest.mark.root
@pytest.mark.runc
@pytest.mark.parametrize("call", FILTERED)
def test_seccomp_itself_refuses(
    env_answers: dict[str, tuple[int, str]], host_answers: dict[str, tuple[int, str]], call: str
) -> None:
    """The host kernel answers these calls with something but EPERM; in the env it is EPERM."""
    assert host_answers[call][1] != "EPERM"
    assert env_answers[call] == (-1, "EPERM")


@pytest.mark.root
@pytest.mark.runc
def test_allowed_calls_still_work(env_answers: dict[str, tuple[int, str]]) -> None:
    """Unix and inet sockets open in the env as on the host."""
    assert (env_answers["socket_unix"], env_answers["socket_inet"]) == ((0, "OK"), (0, "OK"))
