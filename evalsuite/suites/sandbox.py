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

How a run works. The parent (sandbox_run) writes the candidate's program to `program.py` in a fresh temp dir and
starts sandbox_harness as a script (`python -I sandbox_harness.py --harness ...`) in a new session and process
group, cwd = the temp dir, stdin = /dev/null, an allow-listed environment. That process, the judge ("J"), sets
rlimits (CPU, address space, file size, no core), unshares a network and a pid namespace where the kernel allows
it and forks the candidate ("C", pid 1 of the new pid namespace). C drops root to `Limits.sandbox_uid`, caps its
process count, closes everything but its end of a socket to J, runs program.py and then answers J's calls. Only
after the fork does J read, from a pipe, the test code and the run's nonce; it makes itself undumpable (a process
of the same uid cannot read its memory), runs the test and `check(entry_point)` with the candidate's names
proxied, and reports the verdict, tagged with the nonce, on a pipe only it holds. The parent trusts no other
report, enforces the wall clock and the output cap, and at the end, also on success, SIGKILLs the process group
and C; when C (a pid-namespace init) dies the kernel kills every process left in that namespace, so orphans die
even if they called setsid(). Without a pid namespace, leftovers are found by a per-run environment marker.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import replace

from evalsuite.suites.sandbox_limits import DEFAULT_LIMITS, Limits, SandboxError, Verdict
from evalsuite.suites.sandbox_run import _Run

__all__ = ["DEFAULT_LIMITS", "Limits", "SandboxError", "Verdict", "execute_many", "run_check"]

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
