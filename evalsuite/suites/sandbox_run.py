"""One sandboxed execution seen from the evaluator (`_Run`): start the harness script (sandbox_harness) in a new
session, feed the judge its setup, read output and reports under the wall clock and the output cap, then kill
every process of the run and say how that went. See the docstring of evalsuite.suites.sandbox."""

from __future__ import annotations

import json
import os
import secrets
import select
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from evalsuite.suites import sandbox_harness
from evalsuite.suites.sandbox_harness import _ignore_missing, _write_existing
from evalsuite.suites.sandbox_limits import Limits, SandboxError, Verdict

_TAIL_BYTES = 4096
_MARKER_VAR = "EVALSUITE_SANDBOX_RUN"
_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # cgroup v1's pids hierarchy, cgroup v2


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
        harness = os.path.abspath(sandbox_harness.__file__)
        argv = [sys.executable, "-I", harness, "--harness", str(setup_r), str(report_w)]
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
