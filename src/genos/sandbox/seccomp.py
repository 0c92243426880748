"""The syscall allowlist every container environment runs under (OCI ``linux.seccomp``).

Anything not listed fails with ``EPERM`` (``SCMP_ACT_ERRNO``). The list starts
from what Docker allows a container without ``CAP_SYS_ADMIN`` and removes more:

- ``ptrace``, ``process_vm_readv``/``writev``: no debugging of other processes
  (a desktop does not need it; ptrace is a classic sandbox-bypass primitive).
- ``io_uring_*``: a large, fast-moving kernel surface with a long CVE record.
- ``name_to_handle_at``: the half of ``open_by_handle_at`` (shocker) that
  leaks file handles.
- ``fanotify_mark``: useless without ``fanotify_init`` (needs ``CAP_SYS_ADMIN``).
- ``socket``: only ``AF_UNIX``, ``AF_INET``, ``AF_INET6`` and ``AF_NETLINK``;
  exotic families (``AF_VSOCK``, ``AF_ALG``, ``AF_PACKET``, ...) are where
  kernel socket bugs live.
- only the native architecture: 32-bit and x32 system calls are refused.

``clone`` may not create namespaces (flags masked like Docker's), ``clone3``
answers ``ENOSYS`` so libc falls back to ``clone``, ``unshare`` and ``setns``
are refused, and ``personality`` accepts only the harmless personas.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

EPERM = errno.EPERM
ENOSYS = errno.ENOSYS

# linux/sched.h: NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x7E020000

# linux/socket.h address families an environment may open.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
ALLOWED_SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)

# linux/personality.h: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
# and 0xffffffff (query only). Not ADDR_NO_RANDOMIZE: that turns off ASLR.
ALLOWED_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_FILES = """
access chdir chmod chown close close_range copy_file_range creat dup dup2 dup3
faccessat faccessat2 fadvise64 fallocate fchdir fchmod fchmodat fchown fchownat
fcntl fdatasync fgetxattr flistxattr flock fremovexattr fsetxattr fstat fstatfs
fsync ftruncate futimesat getcwd getdents getdents64 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch lchown lgetxattr link linkat
listxattr llistxattr lremovexattr lseek lsetxattr lstat mkdir mkdirat mknod
mknodat newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv removexattr rename renameat
renameat2 rmdir sendfile setxattr splice stat statfs statx symlink symlinkat
sync sync_file_range syncfs tee truncate umask unlink unlinkat utime utimensat
utimes vmsplice write writev
"""
_MEMORY = """
brk madvise membarrier memfd_create memfd_secret mincore mlock mlock2 mlockall
mmap mprotect mremap msync munlock munlockall munmap pkey_alloc pkey_free
pkey_mprotect remap_file_pages
"""
_PROCESSES = """
arch_prctl capget capset execve execveat exit exit_group fork getcpu
getegid geteuid getgid getgroups getitimer getpgid getpgrp getpid getppid
getpriority getresgid getresuid getrlimit get_robust_list getrusage getsid
get_thread_area gettid getuid ioprio_get ioprio_set kill modify_ldt pidfd_open
pidfd_send_signal prctl prlimit64 restart_syscall rseq sched_getaffinity
sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp setfsgid setfsuid setgid
setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid
setrlimit set_robust_list setsid set_thread_area set_tid_address setuid
sysinfo tgkill tkill uname vfork wait4 waitid process_mrelease
"""
_SIGNALS_TIME = """
alarm clock_adjtime adjtimex clock_getres clock_gettime clock_nanosleep
gettimeofday nanosleep pause rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo
sigaltstack signalfd signalfd4 time timer_create timer_delete timer_getoverrun
timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime
times
"""
_IO_IPC = """
epoll_create epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 epoll_wait
eventfd eventfd2 futex futex_waitv getrandom io_cancel io_destroy io_getevents
io_pgetevents io_setup io_submit ioctl landlock_add_rule landlock_create_ruleset
landlock_restrict_self mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedsend mq_unlink msgctl msgget msgrcv msgsnd pipe pipe2 poll ppoll
pselect6 select semctl semget semop semtimedop shmat shmctl shmdt shmget
"""
_NETWORK = """
accept accept4 bind connect getpeername getsockname getsockopt listen recvfrom
recvmmsg recvmsg sendmmsg sendmsg sendto setsockopt shutdown socketpair
"""

ALLOWED: frozenset[str] = frozenset(
    " ".join((_FILES, _MEMORY, _PROCESSES, _SIGNALS_TIME, _IO_IPC, _NETWORK)).split()
)
"""Syscalls allowed without conditions (plus ``socket``, ``personality``, ``clone3``)."""

# Refused on purpose; kept here so tests and the audit record can name them.
DENIED: frozenset[str] = frozenset(
    """
    acct add_key bpf chroot clone3 create_module delete_module fanotify_init
    finit_module fsconfig fsmount fsopen fspick get_kernel_syms init_module iopl
    ioperm io_uring_enter io_uring_register io_uring_setup kcmp kexec_file_load
    kexec_load keyctl lookup_dcookie mount mount_setattr move_mount
    name_to_handle_at nfsservctl open_by_handle_at open_tree perf_event_open
    pidfd_getfd pivot_root process_madvise process_vm_readv process_vm_writev
    ptrace quotactl quotactl_fd reboot request_key setdomainname sethostname
    setns settimeofday swapoff swapon syslog umount2 unshare uselib userfaultfd
    ustat vhangup vm86 vm86old clock_settime
    """.split()
)

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64"],
    "aarch64": ["SCMP_ARCH_AARCH64"],
}


def _arg(index: int, value: int, op: str, mask: int | None = None) -> dict[str, Any]:
    arg: dict[str, Any] = {"index": index, "value": value, "op": op}
    if mask is not None:
        # OCI: for SCMP_CMP_MASKED_EQ ``value`` is the mask, ``valueTwo`` the result.
        arg = {"index": index, "value": mask, "valueTwo": value, "op": op}
    return arg


def _conditional_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [_arg(0, fam, "SCMP_CMP_EQ")]}
        for fam in ALLOWED_SOCKET_FAMILIES
    ]
    rules += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [_arg(0, p, "SCMP_CMP_EQ")]}
        for p in ALLOWED_PERSONAS
    ]
    rules.append(
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [_arg(0, 0, "SCMP_CMP_MASKED_EQ", mask=CLONE_NAMESPACE_FLAGS)],
        }
    )
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return rules


def profile(machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object: an allowlist, everything else ``EPERM``.

    Args:
        machine: ``platform.machine()`` value to build for; the host's by default.

    Returns:
        A JSON-ready mapping for ``config.json``.
    """
    arches = _ARCHES.get(machine or platform.machine(), [])
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": arches,
        "syscalls": [
            {"names": sorted(ALLOWED), "action": "SCMP_ACT_ALLOW"},
            *_conditional_rules(),
        ],
    }


def summary() -> dict[str, Any]:
    """A short description of the profile for the audit record."""
    return {
        "default": "EPERM",
        "allowed": len(ALLOWED) + 3,
        "socket_families": list(ALLOWED_SOCKET_FAMILIES),
        "clone_namespaces": False,
    }
