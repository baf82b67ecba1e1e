"""What a sandboxed run may use (`Limits`), what it gives back (`Verdict`), and the error for a sandbox that
could not be set up. Public through `evalsuite.suites.sandbox`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from evalsuite.errors import UserError


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
