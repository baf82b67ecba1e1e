"""Run model-generated Python (HumanEval/MBPP style) in throwaway, resource-capped processes and judge it by
the check's own outcome, decided in a process the candidate's code never runs in.

    verdict = run_check(prompt + completion, test, "add", Limits(timeout_s=3))
    verdict.status      # "passed" | "failed" | "timeout"
    verdict.reason      # e.g. "check passed", "uncaught exception: AssertionError", "output limit exceeded ..."
    verdict.isolation   # what was enforced for this run, e.g. {"network": "namespace", "pid": "namespace", ...}
    verdicts = execute_many([(program, test, entry_point), ...], Limits(timeout_s=3), workers=2)

Threat model: code written by a model that may be wrong, loop forever, fork, allocate or print without bound,
exit early, print fake test-runner output, leave processes behind, or inspect and patch everything inside its
own process (frames, objects, builtins, file descriptors). None of that can produce a pass: the verdict is
decided by the judge, a separate process that runs the test code and calls the candidate's functions through
proxies; arguments and results cross a socket as plain data (see sandbox_calls), never as code. Out of scope
without a VM: a candidate that attacks the evaluator from outside its process with the privileges it runs
with (where the evaluator is not root, candidates keep its uid; see README, "Code execution").

How a run works. The parent writes the candidate's program to `program.py` in a fresh temp dir and starts this
file as a script (`python -I sandbox.py --harness ...`) in a new session and process group, cwd = the temp dir,
stdin = /dev/null, an allow-listed environment. That process, the judge ("J"), sets rlimits (CPU, address
space, file size, no core), unshares a network and a pid namespace where the kernel allows it and forks the
candidate ("C", pid 1 of the new pid namespace). C drops root to `Limits.sandbox_uid`, caps its process count,
closes everything but its end of a socket to J, runs program.py and then answers J's calls. Only after the
fork does J read, from a pipe, the test code and the run's nonce; it makes itself undumpable (a process of the
same uid cannot read its memory), runs the test and `check(entry_point)` with the candidate's names proxied,
and reports the verdict, tagged with the nonce, on a pipe only it holds. The parent trusts no other report,
enforces the wall clock and the output cap, and at the end, also on success, SIGKILLs the process group and C;
when C (a pid-namespace init) dies the kernel kills every process left in that namespace, so orphans die even
if they called setsid(). Without a pid namespace, leftovers are found by a per-run environment marker.
"""

from __future__ import annotations

import ctypes
import errno
import json
import linecache
import logging
import math
import os
import re
import resource
import secrets
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from evalsuite.errors import UserError
from evalsuite.suites import sandbox_calls, sandbox_jail

log = logging.getLogger(__name__)

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

_TAIL_BYTES = 4096
_MARKER_VAR = "EVALSUITE_SANDBOX_RUN"
_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # cgroup v1's pids hierarchy, cgroup v2
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SandboxError(UserError, RuntimeError):
    """The sandbox itself could not be set up (not the candidate's fault); the message says what to fix."""


@dataclass(frozen=True)
class Limits:
    """Per-run caps. `cpu_s` caps the CPU time of each process of the run (None: the wall-clock timeout, rounded
    up). `max_processes` counts processes *and threads* of the run (RLIMIT_NPROC, only set where it cannot count
    processes outside the run; see `Verdict.isolation["processes"]`). `sandbox_uid`: when the evaluator runs as
    root, the candidate runs as this uid/gid (None keeps root: unsafe, and reported)."""

    timeout_s: float = 10.0
    cpu_s: int | None = None
    memory_mb: int = 1024
    output_bytes: int = 1_000_000
    max_processes: int = 64
    file_size_mb: int = 64
    sandbox_uid: int | None = 65534
    shared_dirs: tuple[str, ...] = ()  # host directories the candidate may also write (tests); default none

    def __post_init__(self) -> None:
        minimums = {"timeout_s": 0.1, "cpu_s": 1, "memory_mb": 64, "output_bytes": 1, "max_processes": 4}
        minimums["file_size_mb"] = 1
        for name, least in minimums.items():
            if getattr(self, name) is not None and getattr(self, name) < least:
                raise ValueError(f"Limits.{name}={getattr(self, name)!r} is too small: use at least {least}")
        if self.sandbox_uid is not None and self.sandbox_uid <= 0:
            raise ValueError(f"Limits.sandbox_uid={self.sandbox_uid!r}: use a non-root uid such as 65534, or None")

    @property
    def cpu_limit_s(self) -> int:
        return self.cpu_s if self.cpu_s is not None else max(1, math.ceil(self.timeout_s))


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Verdict:
    """`status` is the judge's verdict. Out of time (the wall clock or the CPU cap) is "timeout"; killed for
    memory, output or file size counts as "failed" (the reason says which)."""

    status: str  # "passed" | "failed" | "timeout"
    reason: str
    returncode: int | None  # the candidate process's exit status (negative: signal; -9 when the judge ended it)
    duration_s: float
    stdout_tail: str
    stderr_tail: str
    isolation: dict[str, str] = field(hash=False)


def run_check(completion_program: str, test: str, entry_point: str, limits: Limits = DEFAULT_LIMITS) -> Verdict:
    """Run `completion_program` in a fresh sandbox and judge it by `test` + `check(entry_point)`, run in the
    judge's process; see the module docstring."""
    if not _IDENTIFIER.fullmatch(entry_point):
        raise ValueError(f"entry_point={entry_point!r} is not a Python identifier: pass the function's name")
    run_as = limits.sandbox_uid if os.geteuid() == 0 else None
    top = tempfile.mkdtemp(prefix="evalsuite-sandbox-")
    workdir = os.path.join(top, "work")
    os.mkdir(workdir)
    os.mkdir(os.path.join(top, "root"), 0o755)  # the candidate's / where it gets a mount namespace (root only)
    verdict = None
    try:
        program = os.path.join(workdir, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(completion_program + "\n")
        if run_as is not None:
            os.chown(workdir, run_as, run_as)
        verdict = _Run(workdir, program, test, entry_point, limits).execute()
    finally:
        left = _remove(top)
    if left:  # what the candidate did to its directory never costs the run (e.g. chattr +i as root)
        cleanup = verdict.isolation["cleanup"] + f"; WARNING: {left}"
        verdict = replace(verdict, isolation={**verdict.isolation, "cleanup": cleanup})
    return verdict


def _remove(workdir: str) -> str | None:
    """Remove the run's directory; None when done, else what is left and why."""
    try:
        shutil.rmtree(workdir, onerror=_make_removable)
    except OSError as err:
        log.warning("sandbox: could not remove %s: %s", workdir, err)
        return f"could not remove the temp dir {workdir}: {err}"
    return None


def execute_many(
    items: Iterable[tuple[str, str, str]], limits: Limits = DEFAULT_LIMITS, workers: int | None = None
) -> list[Verdict]:
    """`run_check` over `(completion_program, test, entry_point)` items, each in its own process and sandbox,
    `workers` at a time (default: CPU count); verdicts come back in the order of the items."""
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers={workers!r}: use at least 1")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda item: run_check(*item, limits=limits), items))


def _make_removable(function, path, exc_info) -> None:
    """rmtree error hook: a candidate may have chmod-ed a directory to 000; restore and retry once."""
    parent = os.path.dirname(path)
    os.chmod(parent, 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _Run:
    """One sandboxed execution, seen from the parent."""

    def __init__(self, workdir: str, program: str, test: str, entry_point: str, limits: Limits):
        self.workdir, self.program, self.limits = workdir, program, limits
        self.test, self.entry_point = test, entry_point
        self.marker = secrets.token_hex(16)
        self.nonce = secrets.token_hex(16)  # tags the judge's reports; the candidate's process never holds it
        self.foreign_reports = 0  # lines on the report pipe without the nonce (written by something else)
        self.tails = {"stdout": bytearray(), "stderr": bytearray()}
        self.output_total = 0
        self.report: dict[str, object] = {}
        self.report_buffer = b""
        self.child_pidfd: int | None = None
        self.cgroup: str | None = None  # a pids cgroup of this run's own, where one could be made

    def execute(self) -> Verdict:
        import threading

        limits = self.limits
        setup_r, setup_w = os.pipe()
        setup = json.dumps({"nonce": self.nonce, "test": self.test, "entry_point": self.entry_point}).encode()
        writer = threading.Thread(target=_write_and_close, args=(setup_w, setup), daemon=True)
        report_r, report_w = os.pipe()
        config = {key: getattr(limits, key) for key in ("memory_mb", "file_size_mb", "max_processes")}
        config.update(cpu_s=limits.cpu_limit_s, sandbox_uid=limits.sandbox_uid, shared_dirs=list(limits.shared_dirs))
        config["jail_root"] = os.path.join(os.path.dirname(self.workdir), "root")
        if os.geteuid() == 0 and limits.sandbox_uid is None:  # root is exempt from RLIMIT_NPROC
            self.cgroup = _make_pids_cgroup(self.marker, limits.max_processes)
        config["cgroup"] = self.cgroup
        argv = [sys.executable, "-I", os.path.abspath(__file__), "--harness", str(setup_r), str(report_w)]
        argv += [str(os.getpid()), self.program, json.dumps(config)]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=(setup_r, report_w),
            )
            writer.start()
        except BaseException:
            os.close(setup_w)
            raise
        finally:
            os.close(setup_r)
            os.close(report_w)
        try:
            outcome = self._supervise(proc, report_r, start + limits.timeout_s)
            cleanup = self._kill_everything(proc, report_r)
        finally:
            for stream in (proc.stdout, proc.stderr):
                stream.close()
            os.close(report_r)
            if self.child_pidfd is not None:
                os.close(self.child_pidfd)
        duration = time.monotonic() - start
        if "setup_error" in self.report:
            raise SandboxError(f"sandbox setup failed: {self.report['setup_error']}")
        writer.join()
        status, reason = self._judge(outcome, proc.returncode)
        returncode = self.report.get("exit")
        return Verdict(
            status=status,
            reason=reason,
            returncode=returncode if isinstance(returncode, int) else None,
            duration_s=duration,
            stdout_tail=self.tails["stdout"].decode("utf-8", errors="replace"),
            stderr_tail=self.tails["stderr"].decode("utf-8", errors="replace"),
            isolation=self._isolation(cleanup),
        )

    def _environment(self) -> dict[str, str]:
        """The whole environment of the run (an allow-list: nothing is inherited from the evaluator)."""
        env = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
        env.update(HOME=self.workdir, TMPDIR=self.workdir, LANG="C.UTF-8", LC_ALL="C.UTF-8")
        env.update(PATH=f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin", **{_MARKER_VAR: self.marker})
        return env

    def _supervise(self, proc: subprocess.Popen, report_r: int, deadline: float) -> str:
        """Read output and reports until the supervisor exits ("exited"), the clock runs out ("timeout") or
        the output cap is passed ("output")."""
        exit_fd = os.pidfd_open(proc.pid)
        sel = selectors.DefaultSelector()
        try:
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
            sel.register(report_r, selectors.EVENT_READ, "report")
            sel.register(exit_fd, selectors.EVENT_READ, "exit")
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                exited = False
                for key, _ in sel.select(remaining):
                    if key.data == "exit":
                        exited = True
                    elif not self._read(key.fd, key.data):
                        sel.unregister(key.fd)
                if self.output_total > self.limits.output_bytes:
                    return "output"
                if exited:
                    return "exited"
        finally:
            sel.close()
            os.close(exit_fd)

    def _read(self, fd: int, name: str) -> bool:
        chunk = os.read(fd, 65536)
        if name == "report":
            self._take_report(chunk)
        elif chunk:
            self.output_total += len(chunk)
            tail = self.tails[name]
            tail += chunk
            del tail[:-_TAIL_BYTES]
        return bool(chunk)

    def _take_report(self, chunk: bytes) -> None:
        self.report_buffer += chunk
        *lines, self.report_buffer = self.report_buffer.split(b"\n")
        for line in lines:
            try:
                items = json.loads(line)
            except ValueError:
                items = None
            if not isinstance(items, dict) or items.pop("nonce", None) != self.nonce:
                self.foreign_reports += 1  # not the judge's: ignored, and said in the isolation record
                continue
            self.report.update(items)
            if "child_pid" in items and self.child_pidfd is None:
                try:
                    self.child_pidfd = os.pidfd_open(int(self.report["child_pid"]))
                except ProcessLookupError:
                    pass  # already exited and reaped: nothing left to kill

    def _kill_everything(self, proc: subprocess.Popen, report_r: int) -> str:
        """SIGKILL the group, the worker and (without a pid namespace) every process carrying our marker; wait
        until they are gone; collect the remaining output. Returns how cleanup went, for `isolation`."""
        while select.select([report_r], [], [], 0)[0] and self._read(report_r, "report"):
            pass
        _ignore_missing(os.killpg, proc.pid, signal.SIGKILL)
        if self.child_pidfd is not None:
            _ignore_missing(signal.pidfd_send_signal, self.child_pidfd, signal.SIGKILL)
        if self.report.get("pid") != "namespace":
            _kill_marked(self.marker)
        proc.wait()
        lingering = []
        if self.child_pidfd is not None and not select.select([self.child_pidfd], [], [], 5.0)[0]:
            lingering.append(f"worker pid {self.report['child_pid']} still alive 5 s after SIGKILL")
        if self.report.get("pid") != "namespace" and _kill_marked(self.marker):
            lingering.append("processes carrying the run marker reappeared and were killed again")
        fds = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", report_r: "report"}
        drain_deadline = time.monotonic() + 1.0
        while fds and (remaining := drain_deadline - time.monotonic()) > 0:
            for fd in select.select(list(fds), [], [], remaining)[0]:
                if not self._read(fd, fds[fd]):
                    del fds[fd]
        if fds:
            lingering.append(f"{'/'.join(sorted(fds.values()))} still held open by an escaped process")
        if self.cgroup is not None:
            try:
                os.rmdir(self.cgroup)
            except OSError as exc:
                lingering.append(f"could not remove the pids cgroup {self.cgroup}: {exc}")
        how = "SIGKILL to the process group and the worker, " + (
            "a pid-namespace init: every process of the run dies with it"
            if self.report.get("pid") == "namespace"
            else "and to every process carrying the run's environment marker"
        )
        return how + "".join(f"; WARNING: {problem}" for problem in lingering)

    def _judge(self, outcome: str, judge_status: int) -> tuple[str, str]:
        limits = self.limits
        if outcome == "timeout":
            return "timeout", f"wall-clock timeout after {limits.timeout_s:g} s"
        if outcome == "output":
            return "failed", f"output limit exceeded: more than {limits.output_bytes} bytes on stdout+stderr"
        verdict, reason = self.report.get("verdict"), self.report.get("reason")
        if verdict not in ("passed", "failed", "timeout") or not isinstance(reason, str):
            return "failed", f"the sandbox's judge died without a verdict (exit status {judge_status})"
        return verdict, reason

    def _isolation(self, cleanup: str) -> dict[str, str]:
        limits, missing = self.limits, "unknown: the sandbox stopped before reporting it"
        isolation = {key: str(self.report.get(key, missing)) for key in ("network", "pid", "user", "processes")}
        isolation["filesystem"] = str(self.report.get("filesystem", missing))
        isolation["rlimits"] = str(self.report.get("rlimits", missing))
        isolation.update(
            wall_clock=f"{limits.timeout_s:g} s",
            output=f"{limits.output_bytes} bytes on stdout+stderr, read incrementally; the run is killed past it",
            session="new session and process group",
            stdin="/dev/null",
            env="allow-list: " + ", ".join(sorted(self._environment())),
            cleanup=cleanup,
            verdict="decided by the judge process from the check's outcome; the candidate's functions ran in "
            "their own process, called through proxies with plain-data arguments and results",
        )
        if self.foreign_reports:
            isolation["verdict"] += f"; WARNING: {self.foreign_reports} report lines without the run's nonce ignored"
        return isolation


def _ignore_missing(kill, target: int, sig: int) -> None:
    try:
        kill(target, sig)
    except ProcessLookupError:
        pass  # already gone


def _kill_marked(marker: str) -> int:
    """SIGKILL every readable process whose environment carries `_MARKER_VAR=marker`, until none is left.
    Returns how many were killed."""
    needle, killed = f"{_MARKER_VAR}={marker}".encode(), 0
    for _ in range(50):
        found = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        os.kill(int(name), signal.SIGKILL)
                        found += 1
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # exited meanwhile, or not ours to read (so not ours)
        killed += found
        if not found:
            break
        time.sleep(0.01)
    return killed


# ---- inside the sandbox: this file run as `python -I sandbox.py --harness ...` (stdlib only from here) ----


def _report(fd: int, nonce: str, **items: object) -> None:
    os.write(fd, (json.dumps({"nonce": nonce, **items}) + "\n").encode())


def _write_and_close(fd: int, data: bytes) -> None:
    try:
        _write_all(fd, data)
    except OSError:
        pass  # the judge died before reading its setup: its missing verdict says so
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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


def _make_pids_cgroup(marker: str, limit: int, roots: Sequence[str] = _CGROUP_ROOTS) -> str | None:
    """A cgroup capping the run at `limit` tasks, in the cgroup v1 pids hierarchy or the v2 unified one,
    where this process may make one; None where neither is mounted writable with the pids controller."""
    for root in roots:
        path = os.path.join(root, f"evalsuite-sandbox-{marker}")
        try:
            os.mkdir(path)
        except OSError:
            continue
        try:
            _write_existing(os.path.join(path, "pids.max"), str(limit))
        except OSError:
            os.rmdir(path)  # not a cgroup, or no pids controller in this hierarchy
            continue
        return path
    return None


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
