"""The candidate's view of the machine when the sandbox runs as root: a mount namespace whose root is an empty
tmpfs holding read-only bind mounts of what Python needs (the system's /usr and libraries, the interpreter and
the directories it imports from), a private /dev, /proc of the run's own pid namespace, and the run's
directory, writable; then every capability is dropped. The candidate keeps uid 0 (or drops to
Limits.sandbox_uid after) but cannot mount, trace, reach other processes' /proc, the cgroup tree, /etc, the
evaluator's files, or write anywhere but its directory. Standard library only (runs inside the sandbox).

    view = enter_jail(libc, jail_root, workdir)   # in the candidate's process, before any of its code runs
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
MNT_DETACH = 2
CAP_LAST = 63
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers (glibc has no wrapper)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("null", "zero", "full", "random", "urandom")


class JailError(OSError):
    pass


def python_dirs() -> list[str]:
    """The interpreter's own directories and those it imports from, without the folders that only a
    development checkout adds to sys.path (the candidate needs no evalsuite source)."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    dirs = set(roots) | {os.path.dirname(os.path.realpath(sys.executable))}
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        if not os.path.isdir(real):
            continue
        if os.path.basename(real) in ("site-packages", "dist-packages") or any(
            real == r or real.startswith(r + os.sep) for r in roots
        ):
            dirs.add(real)
    # keep the outermost of nested directories: one bind covers its subdirectories
    ordered = sorted(dirs)
    return [d for i, d in enumerate(ordered) if not any(d.startswith(o + os.sep) for o in ordered[:i])]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise JailError(code, f"{what}: {os.strerror(code)}")


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if x is None else x.encode() for x in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {source or fstype} on {target}")


def _bind(libc, path: str, root: str, writable: bool = False) -> None:
    target = root + path
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(libc, path, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if writable else MS_RDONLY)
    _mount(libc, None, target, None, flags | (MS_NODEV if path != "/dev" else 0))


def enter_jail(libc: ctypes.CDLL, root: str, workdir: str, shared: tuple[str, ...] = ()) -> str:
    """Build the view in `root` (an empty directory) and make it the root; returns what the candidate sees, for the
    isolation record; `shared` are more host directories bound writable (Limits.shared_dirs). Raises JailError
    where the kernel refuses (no CAP_SYS_ADMIN, no mount namespaces)."""
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    # the private /dev, /proc and /tmp first: binds below them (a venv under /tmp) then land on top
    os.makedirs(root + "/dev")
    _mount(libc, "tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{root}/dev/{name}", "a").close()
            _mount(libc, f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    os.makedirs(root + "/dev/shm")
    _mount(libc, "tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    os.makedirs(root + "/proc")
    _mount(libc, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/tmp")
    _mount(libc, "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    shown = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            _bind(libc, path, root)
            shown.append(path)
    for path in python_dirs() + [f for f in SYSTEM_FILES if os.path.isfile(f)]:
        if not any(path == s or path.startswith(s + os.sep) for s in shown):
            _bind(libc, path, root)
            shown.append(path)
    for path in [workdir, *shared]:
        _bind(libc, path, root, writable=True)
    _pivot_root(libc, root)
    _mount(libc, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(workdir)
    writable = ", ".join([workdir, *shared])
    return (
        f"a mount namespace of its own: read-only {', '.join(shown)}; private /dev, /tmp and /proc (this run's "
        f"processes only); writable {writable}; nothing else"
    )


def _pivot_root(libc: ctypes.CDLL, root: str) -> None:
    """Make `root` the mount namespace's root and detach the old one (unlike chroot, nothing of the old root
    stays reachable, and user namespaces can still be created afterwards)."""
    number = PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise JailError(0, f"pivot_root: unknown syscall number on {platform.machine()}")
    old = root + "/.old-root"
    os.mkdir(old)
    _check(libc.syscall(number, root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old-root", MNT_DETACH), "umount2 the old root")
    os.rmdir("/.old-root")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities(libc: ctypes.CDLL) -> str:
    """Drop every capability from the bounding set and the current sets, and forbid gaining any back (setuid
    binaries included). Root stays uid 0 but loses what makes it more than a file owner. Returns what was done."""
    for cap in range(CAP_LAST + 1):  # past the kernel's last capability prctl fails (EINVAL): harmless
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset (drop all)")
    return "every capability dropped (bounding set too), no new privileges"
