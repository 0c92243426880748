/*
 * GenOS sandbox probe: run inside an environment, try things a breakout
 * would need, print what the kernel answered. Built static at test time
 * (gcc -static) so it needs nothing from the image.
 *
 *   probe syscalls        one line per attempt: "<name> <return> <errno name>"
 *                         (NEVER on the host: mount, umount2, sethostname...)
 *   probe harmless        the subset that changes nothing even when allowed
 *   probe forkbomb N      fork (children sleep) until refused or N; "forks=<k> errno=<e>"
 *   probe memhog MB       allocate and touch MB MiB, printing progress
 *   probe spin SEC N      N processes busy-loop for SEC seconds of wall time
 *
 * Arguments to the syscalls are chosen so that a kernel that got the call
 * would answer something other than EPERM where it can (EFAULT, EINVAL,
 * EBADF, success): an EPERM then means seccomp or a missing capability
 * stopped it before the kernel looked at it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif

static const char *errname(int e) {
    switch (e) {
    case 0: return "OK";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ENOSYS: return "ENOSYS";
    case EROFS: return "EROFS";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case ESRCH: return "ESRCH";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOTDIR: return "ENOTDIR";
    case EEXIST: return "EEXIST";
    case EBUSY: return "EBUSY";
    case ENODEV: return "ENODEV";
    case ENOKEY: return "ENOKEY";
    case EDQUOT: return "EDQUOT";
    case ENOEXEC: return "ENOEXEC";
    default: return "E?";
    }
}

static void report(const char *name, long ret) {
    int e = ret < 0 ? errno : 0;
    printf("%s %ld %s\n", name, ret, errname(e));
    fflush(stdout);
}

/* Run fn in a child so that a call which succeeds cannot change the probe. */
static void in_child(const char *name, long (*fn)(void)) {
    int pipefd[2];
    if (pipe(pipefd) != 0) { report(name, -1); return; }
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        long ret = fn();
        int e = ret < 0 ? errno : 0;
        long out[2] = {ret, e};
        if (write(pipefd[1], out, sizeof out) < 0) _exit(2);
        _exit(0);
    }
    close(pipefd[1]);
    long got[2] = {-1, EPERM};
    ssize_t n = read(pipefd[0], got, sizeof got);
    close(pipefd[0]);
    waitpid(pid, NULL, 0);
    if (n != sizeof got) { printf("%s -1 E?\n", name); return; }
    errno = (int)got[1];
    report(name, got[0] < 0 ? -1 : got[0]);
}

static long do_unshare_user(void) { return unshare(CLONE_NEWUSER); }
static long do_unshare_ns(void) { return unshare(CLONE_NEWNS); }
static long do_unshare_net(void) { return unshare(CLONE_NEWNET); }

static long clone_flags(unsigned long flags) {
    long ret = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (ret == 0) _exit(0);
    if (ret > 0) { waitpid((pid_t)ret, NULL, 0); return 0; }
    return ret;
}
static long do_clone_user(void) { return clone_flags(CLONE_NEWUSER); }
static long do_clone_pid(void) { return clone_flags(CLONE_NEWPID); }
static long do_clone_plain(void) { return clone_flags(0); }

static long do_clone3(void) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    long ret = syscall(SYS_clone3, &args, sizeof args);
    if (ret == 0) _exit(0);
    if (ret > 0) { waitpid((pid_t)ret, NULL, 0); return 0; }
    return ret;
}

static long do_ptrace_attach(void) {
    long ret = syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, 1, 0, 0);
    if (ret == 0) syscall(SYS_ptrace, 17 /* PTRACE_DETACH */, 1, 0, 0);
    return ret;
}

static long do_personality(void) {
    long ret = personality(0x0040000 /* ADDR_NO_RANDOMIZE */);
    return ret == -1 ? -1 : 0;
}

static long sock(int domain, int type, int proto) {
    long fd = socket(domain, type, proto);
    if (fd >= 0) close((int)fd);
    return fd >= 0 ? 0 : fd;
}

/* Calls that change nothing even where the kernel accepts them: safe on the host too. */
static void harmless(void) {
    in_child("clone3", do_clone3);
    report("keyctl", syscall(SYS_keyctl, 0xdead, 0, 0, 0, 0));
    report("add_key", syscall(SYS_add_key, "user", "genos", "x", 1, 0));
    report("request_key", syscall(SYS_request_key, "user", "genos", NULL, 0));
    report("bpf", syscall(SYS_bpf, 0xdead, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL));
    report("userfaultfd", syscall(SYS_userfaultfd, 0xdead));
    report("name_to_handle_at", syscall(SYS_name_to_handle_at, -100, "/", NULL, NULL, 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    in_child("personality_no_aslr", do_personality);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 0, NULL));
    report("socket_vsock", sock(40, SOCK_STREAM, 0));
    report("socket_alg", sock(38, SOCK_SEQPACKET, 0));
    report("socket_inet", sock(AF_INET, SOCK_STREAM, 0));
    report("socket_unix", sock(AF_UNIX, SOCK_STREAM, 0));
}

/* Everything else: only ever run inside an environment. */
static void syscalls(void) {
    char buf[64] = {0};
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
    report("umount2", syscall(SYS_umount2, "/proc", 2 /* MNT_DETACH */));
    report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
    report("open_tree", syscall(SYS_open_tree, -100, "/", 0));
    report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    in_child("unshare_user", do_unshare_user);
    in_child("unshare_mount", do_unshare_ns);
    in_child("unshare_net", do_unshare_net);
    in_child("clone_newuser", do_clone_user);
    in_child("clone_newpid", do_clone_pid);
    in_child("clone_plain", do_clone_plain);
    int nsfd = open("/proc/self/ns/net", O_RDONLY);
    report("setns", syscall(SYS_setns, nsfd, 0));
    in_child("ptrace_attach", do_ptrace_attach);
    report("process_vm_readv", syscall(SYS_process_vm_readv, 1, NULL, 0, NULL, 0, 0));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0xdead0000UL));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("delete_module", syscall(SYS_delete_module, "genos_nonexistent", 0));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
    report("swapon", syscall(SYS_swapon, "/nonexistent", 0));
    report("swapoff", syscall(SYS_swapoff, "/nonexistent"));
    report("acct", syscall(SYS_acct, "/nonexistent/acct"));
    report("quotactl", syscall(SYS_quotactl, 0, NULL, 0, NULL));
    report("lookup_dcookie", syscall(212 /* x86_64 lookup_dcookie */, 0, NULL, 0));
    report("iopl", syscall(SYS_iopl, 3));
    report("ioperm", syscall(SYS_ioperm, 0x80, 1, 1));
    report("create_module", syscall(174 /* x86_64 create_module */, NULL, 0));
    report("get_kernel_syms", syscall(177 /* x86_64 get_kernel_syms */, NULL));
    report("nfsservctl", syscall(180 /* x86_64 nfsservctl */, 0, NULL, NULL));
    report("syslog", syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0));
    report("chroot", syscall(SYS_chroot, "/tmp"));
    report("sethostname", syscall(SYS_sethostname, "genos-x", 7));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    report("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &now));
    report("mknod_block", syscall(SYS_mknodat, -100, "/tmp/genos-sda", S_IFBLK | 0600, makedev(8, 0)));
    report("mknod_mem", syscall(SYS_mknodat, -100, "/tmp/genos-mem", S_IFCHR | 0600, makedev(1, 1)));
    report("socket_packet", sock(AF_PACKET, SOCK_RAW, 0));
    report("socket_raw", sock(AF_INET, SOCK_RAW, 1 /* ICMP */));
    report("getpid", (long)getpid() > 0 ? 0 : -1);
    (void)buf;
    harmless();
}

static int forkbomb(long limit) {
    pid_t *kids = calloc((size_t)limit, sizeof(pid_t));
    long n = 0;
    int err = 0;
    for (; n < limit; n++) {
        pid_t pid = fork();
        if (pid == 0) { pause(); _exit(0); }
        if (pid < 0) { err = errno; break; }
        kids[n] = pid;
    }
    printf("forks=%ld errno=%s\n", n, errname(err));
    fflush(stdout);
    for (long i = 0; i < n; i++) kill(kids[i], SIGKILL);
    for (long i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    return 0;
}

static int memhog(long mb) {
    for (long i = 1; i <= mb / 16; i++) {
        char *p = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { printf("mmap failed at %ld MiB\n", i * 16); return 1; }
        memset(p, 0x5a, 16 << 20);
        printf("%ld\n", i * 16);
        fflush(stdout);
    }
    return 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int spin(double seconds, int procs) {
    for (int i = 0; i < procs; i++) {
        if (fork() == 0) {
            double end = now_s() + seconds;
            volatile unsigned long x = 0;
            while (now_s() < end) x++;
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {}
    printf("spun\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "syscalls") == 0) { syscalls(); return 0; }
    if (argc >= 2 && strcmp(argv[1], "harmless") == 0) { harmless(); return 0; }
    if (argc >= 3 && strcmp(argv[1], "forkbomb") == 0) return forkbomb(atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "memhog") == 0) return memhog(atol(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "spin") == 0) return spin(atof(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: probe syscalls | harmless | forkbomb N | memhog MB | spin SEC N\n");
    return 2;
}
