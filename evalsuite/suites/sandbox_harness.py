"""Inside the sandbox: the judge and the candidate's process. The evaluator runs this file as a script
(`python -I sandbox_harness.py --harness ...`); standard library only (with sandbox_calls and sandbox_jail).
See the docstring of evalsuite.suites.sandbox for how a run works."""

from __future__ import annotations

import ctypes
import errno
import json
import linecache
import os
import resource
import signal
import socket
import sys
import traceback
from collections.abc import Sequence

from evalsuite.suites import sandbox_calls, sandbox_jail

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4

# Exit statuses of the candidate's process set by the harness (they only explain a failure; a pass is the
# judge's report, never an exit status).
EXIT_EXCEPTION = 120
EXIT_SYSTEM_EXIT = 121
EXIT_MEMORY = 122
EXIT_SETUP = 123


def _ignore_missing(kill, target: int, sig: int) -> None:
    try:
        kill(target, sig)
    except ProcessLookupError:
        pass  # already gone


def _report(fd: int, nonce: str, **items: object) -> None:
    os.write(fd, (json.dumps({"nonce": nonce, **items}) + "\n").encode())


def _unshare(libc: ctypes.CDLL, flags: int, label: str) -> str | None:
    """None on success, else the reason it failed."""
    if libc.unshare(flags) == 0:
        return None
    code = ctypes.get_errno()
    return f"unavailable: unshare({label}) failed: {errno.errorcode.get(code, code)} ({os.strerror(code)})"


def _set_limit(which: int, value: int, grace: int = 0) -> int:
    """Set soft = value and hard = value + grace, each capped by the current hard limit (an outer cap stays in
    force). Returns the soft limit in force."""
    current = resource.getrlimit(which)[1]
    soft, hard = value, value + grace
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))
    return soft


def _harness_main(argv: Sequence[str]) -> None:
    """The judge: limits, namespaces, fork the candidate's process, then run the check and report."""
    setup_fd, report_fd, parent_pid = int(argv[0]), int(argv[1]), int(argv[2])
    program, config = argv[3], json.loads(argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(EXIT_SETUP)  # the evaluator is already gone
    try:
        cpu = _set_limit(resource.RLIMIT_CPU, config["cpu_s"], grace=1)
        memory = _set_limit(resource.RLIMIT_AS, config["memory_mb"] << 20) >> 20
        fsize = _set_limit(resource.RLIMIT_FSIZE, config["file_size_mb"] << 20) >> 20
        _set_limit(resource.RLIMIT_CORE, 0)
    except (OSError, ValueError) as exc:
        _report(report_fd, _read_setup(setup_fd)["nonce"], setup_error=f"setrlimit failed: {exc}")
        os._exit(EXIT_SETUP)
    rlimits = f"cpu {cpu} s (then SIGXCPU, SIGKILL 1 s later), address space {memory} MB, file size {fsize} MB, no core"
    if os.geteuid() == 0:
        network = _unshare(libc, CLONE_NEWNET, "CLONE_NEWNET") or "namespace"
        pid = _unshare(libc, CLONE_NEWPID, "CLONE_NEWPID") or "namespace"
        in_userns = False
    else:
        failure = _unshare(libc, CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID, "CLONE_NEWUSER|NEWNET|NEWPID")
        network = pid = failure or "namespace"
        in_userns = failure is None
    judge_end, candidate_end = socket.socketpair()
    child = os.fork()
    if child == 0:
        judge_end.close()
        os.close(setup_fd)
        os.close(report_fd)
        _candidate(libc, candidate_end, program, config, in_userns)
    candidate_end.close()
    setup = _read_setup(setup_fd)  # only now: the candidate's process never holds the nonce or the test
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # nor can a process of its uid read this one's memory
    nonce = setup["nonce"]
    _report(report_fd, nonce, child_pid=child, network=network, pid=pid, rlimits=rlimits)
    verdict, reason = _judge_check(judge_end, setup["test"], setup["entry_point"], report_fd, nonce)
    sandbox_calls.flush_output()
    if verdict == "setup_error":
        os._exit(EXIT_SETUP)
    _ignore_missing(os.kill, child, signal.SIGKILL)
    _, status, usage = os.wait4(child, 0)
    code, cpu_s = os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
    if verdict == "gone":
        verdict, reason = _gone(code, cpu_s, config)
    _report(report_fd, nonce, exit=code, cpu_s=cpu_s, maxrss_kb=usage.ru_maxrss, verdict=verdict, reason=reason)
    os._exit(0)


def _read_setup(fd: int) -> dict:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def _judge_check(conn: socket.socket, test: str, entry_point: str, report_fd: int, nonce: str) -> tuple[str, str]:
    """("passed" | "failed", reason), ("gone", "") when the candidate's process ended first, or ("setup_error",
    message) when it could not be set up."""
    try:
        first = sandbox_calls.receive(conn)
        if first[0] == "setup_error":
            _report(report_fd, nonce, setup_error=str(first[1]))
            return "setup_error", str(first[1])
        _report(report_fd, nonce, user=str(first[1]), processes=str(first[2]), filesystem=str(first[3]))
        loaded = sandbox_calls.receive(conn)
        if loaded[0] == "error":
            return "failed", f"uncaught exception: {loaded[1]}"
        names = sandbox_calls.CandidateNamespace(conn)
        linecache.cache["<test>"] = (len(test), None, test.splitlines(True), "<test>")  # source in tracebacks
        exec(compile(test, "<test>", "exec"), names)  # noqa: S102 - the task's own test code
        check = dict.get(names, "check")
        if not callable(check):
            return "failed", "the test code defines no check(candidate) function"
        check(names.proxy(entry_point))
    except (sandbox_calls.CandidateGone, OSError) as err:
        if isinstance(err, sandbox_calls.CandidateGone) or err.errno in (errno.EPIPE, errno.ECONNRESET):
            return "gone", ""
        return _failure(err)
    except BaseException as err:  # noqa: BLE001 - whatever the check raises fails it
        return _failure(err)
    return "passed", "check passed"


def _failure(err: BaseException) -> tuple[str, str]:
    traceback.print_exc()
    if isinstance(err, MemoryError):
        return "failed", "memory limit exceeded in the check: MemoryError"
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return "failed", f"uncaught exception: {text[:300]}"


def _gone(code: int, cpu_s: float, config: dict) -> tuple[str, str]:
    """Why the candidate's process ended before the check finished, from its exit status."""
    if code < 0:
        name = signal.Signals(-code).name if -code in set(signal.Signals) else f"signal {-code}"
        if cpu_s >= config["cpu_s"] * 0.95:
            return "timeout", f"CPU time limit exceeded ({config['cpu_s']} s, killed by {name})"
        return "failed", f"killed by {name}"
    reasons = {
        EXIT_SYSTEM_EXIT: "the program called sys.exit()/exit() before check() finished",
        EXIT_MEMORY: f"memory limit exceeded ({config['memory_mb']} MB address space): MemoryError",
        0: "the program exited with status 0 before check() finished (os._exit?)",
    }
    return "failed", reasons.get(code, f"the program exited with status {code} before check() finished")


def _candidate(libc: ctypes.CDLL, conn: socket.socket, program: str, config: dict, in_userns: bool) -> None:
    """The candidate's process: drop privileges, cap processes, run program.py, then answer the judge's calls."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.closerange(3, conn.fileno())  # keep stdin/stdout/stderr and the channel to the judge only
        os.closerange(conn.fileno() + 1, 1 << 16)
        as_root = os.geteuid() == 0
        if as_root and config["sandbox_uid"] is None and config["cgroup"] is not None:
            _write_existing(os.path.join(config["cgroup"], "cgroup.procs"), "0")  # before /sys is out of sight
        if config["sandbox_uid"] is not None and as_root:
            config["tasks_of_uid"] = _count_tasks(config["sandbox_uid"])  # the host's count, before /proc is ours
        filesystem = _jail(libc, program, config) if as_root else NOT_JAILED + "the evaluator is not root"
        user, processes = _drop_privileges(libc, config, in_userns)
        if os.geteuid() == 0 and not filesystem.startswith(NOT_JAILED):
            user += "; " + sandbox_jail.drop_capabilities(libc)
        elif os.geteuid() == 0:
            user += ": UNSAFE, the candidate can read and write whatever root can"
        _check_access(program)
    except (OSError, ValueError, ImportError) as exc:
        sandbox_calls.send(conn, ["setup_error", str(exc)])
        os._exit(EXIT_SETUP)
    sandbox_calls.send(conn, ["setup", user, processes, filesystem])
    sys.argv = [program]
    names = {"__name__": "__main__", "__file__": program, "__builtins__": __builtins__}
    try:
        with open(program, encoding="utf-8") as f:
            source = f.read()
        exec(compile(source, program, "exec"), names)  # noqa: S102 - the candidate, in its sandbox
        sandbox_calls.flush_output()
        sandbox_calls.send(conn, ["ready"])
        sandbox_calls.serve(conn, names)
    except SystemExit as exc:
        print(f"sandbox: SystemExit({exc.code!r}) before check() finished", file=sys.stderr, flush=True)
        os._exit(EXIT_SYSTEM_EXIT)
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except BaseException as err:  # the harness boundary: the program failed while it loaded
        traceback.print_exc()
        sandbox_calls.flush_output()
        try:
            sandbox_calls.send(conn, ["error", f"{type(err).__name__}: {err}"[:300]])
        except OSError:
            pass  # the judge is gone; the exit status says the rest
        os._exit(EXIT_EXCEPTION)
    sandbox_calls.flush_output()
    os._exit(0)


NOT_JAILED = "not isolated (cwd and HOME are a fresh temp dir, removed afterwards; the rest is visible): "


def _jail(libc: ctypes.CDLL, program: str, config: dict) -> str:
    """The candidate's own mount namespace (see sandbox_jail), or why it has none."""
    try:
        return sandbox_jail.enter_jail(
            libc, config["jail_root"], os.path.dirname(program), tuple(config["shared_dirs"])
        )
    except OSError as err:
        return NOT_JAILED + f"no mount namespace ({err})"


def _drop_privileges(libc: ctypes.CDLL, config: dict, in_userns: bool) -> tuple[str, str]:
    """Returns what was done about the user and about the process count, for `isolation`."""
    uid, nproc = config["sandbox_uid"], config["max_processes"]
    if os.geteuid() != 0:
        user = f"uid {os.getuid()} (unchanged: the evaluator is not root)"
    elif uid is None:
        user = "root (Limits.sandbox_uid=None)"
        if config["cgroup"] is None:
            return user, "unbounded: root is exempt from RLIMIT_NPROC and no pids cgroup could be made"
        return user, f"pids cgroup {config['cgroup']}: at most {nproc} processes and threads"
    else:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        user = f"uid/gid {uid} (dropped from root)"
        in_userns = _unshare(libc, CLONE_NEWUSER, "CLONE_NEWUSER") is None
    if in_userns:
        _set_limit(resource.RLIMIT_NPROC, nproc)
        return user, f"RLIMIT_NPROC {nproc} (processes and threads), counted in this run's user namespace"
    # RLIMIT_NPROC counts every task of the real uid: allow the ones that exist now plus `nproc` more.
    others = config.get("tasks_of_uid", _count_tasks(os.getuid()))
    limit = _set_limit(resource.RLIMIT_NPROC, others + nproc)
    return user, (
        f"RLIMIT_NPROC {limit}: the {others} processes/threads uid {os.getuid()} had + {nproc}, "
        "shared with its other processes (no user namespace)"
    )


def _write_existing(path: str, text: str) -> None:
    """Write to a cgroup's control file, never creating one (a plain directory is not a cgroup)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _count_tasks(uid: int) -> int:
    """Tasks (threads included) whose real uid is `uid`, as RLIMIT_NPROC counts them."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        if int(fields["Uid"].split()[0]) == uid:
            count += int(fields["Threads"])
    return count


def _check_access(program: str) -> None:
    """After dropping root: can the candidate still import the standard library and use its directory?"""
    for path in sys.path:
        try:
            os.listdir(path or ".")
        except (FileNotFoundError, NotADirectoryError):
            continue  # not on disk (e.g. the stdlib zip): nothing to read
        except PermissionError:
            raise ValueError(
                f"uid {os.getuid()} cannot access {path}, which this Python imports from: make it (and its parent "
                "directories) world-readable, or set Limits(sandbox_uid=None) to run candidates as root (unsafe)"
            ) from None
    if not os.access(os.path.dirname(program), os.R_OK | os.W_OK | os.X_OK):
        raise ValueError(f"uid {os.getuid()} cannot write the sandbox directory {os.path.dirname(program)}")


if __name__ == "__main__" and sys.argv[1:2] == ["--harness"]:
    _harness_main(sys.argv[2:])
