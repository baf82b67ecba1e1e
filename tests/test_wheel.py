"""Installed from a wheel, not editable: the package finds its suites, tasks, templates and embedded model
inside itself, lists them, and runs a suite from a folder that has nothing of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite.tasks import builtin_tasks

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> where setuptools' package-dir puts it (pyproject.toml).
INSTALLED_AS = {"evalsuite": "evalsuite", "kernels": "evalsuite/kernels", "quant_schemes": "evalsuite/quant_schemes",
                "tasks": "evalsuite/tasks", "reports": "evalsuite/reports"}  # fmt: skip

SMALL_SUITE = """\
name: from-wheel
model:
  path: embedded:tiny
variants: [W4A16]
suites:
  academic:
    tasks: [tiny_mc]
    limit: 8
run:
  batch_size: 8
  bootstrap_iters: 50
"""


def _tracked_files() -> list[str]:
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", *INSTALLED_AS, "pyproject.toml", "README.md"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"this test builds the wheel from git's tracked files; `git ls-files` failed: {done.stderr}")
    return done.stdout.split()


def _no_isolation() -> list[str]:
    """Build with the installed setuptools when it can write wheels by itself (>= 70.1); otherwise let pip
    fetch the build requirements, as any user's `pip install .` does."""
    try:
        import setuptools
    except ImportError:
        return []
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return ["--no-build-isolation"] if (major, minor) >= (70, 1) else []


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from a copy of the tracked files, installed into its own folder: (folder, files)."""
    root = tmp_path_factory.mktemp("wheel")
    source, wheels, target = root / "source", root / "wheels", root / "site"
    files = _tracked_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", *_no_isolation(), "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("evalsuite-*.whl")
    done = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return target, files


def _isolated(target: Path) -> dict:
    """The environment of a user who installed the wheel into `target`: the repository is not on the path
    (its own PYTHONPATH entries are kept, where a machine keeps its dependencies, the GPU image's /tmp/site)."""
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *kept])}


def _evalsuite(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = _isolated(target)
    return subprocess.run([sys.executable, "-m", "evalsuite", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def test_every_data_file_is_in_the_wheel(installed):
    target, files = installed
    data = [f for f in files if "/" in f and not f.endswith(".py")]
    assert data, "no data files among the tracked ones: the test would check nothing"
    top = {f.split("/")[0] for f in data}
    missing = [f for f in data if not (target / INSTALLED_AS[f.split("/")[0]] / f.split("/", 1)[1]).is_file()]
    assert missing == [], f"tracked under {sorted(top)} but not installed: {missing}"


def test_lists_every_built_in_suite_task_and_scheme(installed, tmp_path):
    target, _ = installed
    expected = {
        "suites": [p.stem for p in (ROOT / "tasks" / "suites").glob("*.yaml")],
        "tasks": list(builtin_tasks()),
        "schemes": ["W8A8_INT8", "W8A8_FP8", "W4A16", "MXFP4", "NVFP4"],
    }
    for what, names in expected.items():
        done = _evalsuite(target, tmp_path, "list", what)
        assert done.returncode == 0, done.stderr[-2000:]
        listed = done.stdout
        assert names and all(name in listed for name in names), (what, names, listed)


def test_runs_a_suite_from_a_folder_outside_the_repository(installed, tmp_path):
    target, _ = installed
    (tmp_path / "suite.yaml").write_text(SMALL_SUITE)
    done = _evalsuite(target, tmp_path, "run", "suite.yaml", "--out", "run")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "W4A16" in results["variants"], list(results["variants"])
    assert (tmp_path / "run" / "report.html").is_file()
    code = "import evalsuite, evalsuite.config as c; print(evalsuite.__file__); print(c.builtin_suites()['demo'])"
    shown = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_isolated(target),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    package, demo = (Path(line) for line in shown.stdout.split())
    assert package.is_relative_to(target) and demo.is_relative_to(target), shown.stdout


def test_python_started_in_the_repository_root_imports_every_subpackage(installed):
    """With the wheel installed and Python started in a checkout's root, the checkout's `evalsuite/` comes first
    on the path; its subpackages from top-level folders (package-dir) must still import, all from the checkout
    (also where an editable install of another checkout is on the path, as in CI)."""
    target, _ = installed
    checkout = target.parent / "source"  # the tracked files the wheel was built from, laid out as the repository
    names = [f"evalsuite.{name}" for name in INSTALLED_AS if name != "evalsuite"]
    code = (
        f"import importlib, evalsuite; mods = [importlib.import_module(n) for n in {names!r}]; "
        "import evalsuite.kernels.act_quant as aq; print(evalsuite.__file__); print(aq.__file__); "
        "[print(m.__file__) for m in mods]"
    )
    shown = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=_isolated(target),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    files = [Path(line) for line in shown.stdout.split()]
    assert len(files) == 2 + len(names), shown.stdout
    assert all(f.resolve().is_relative_to(checkout.resolve()) for f in files), shown.stdout
    listed = _evalsuite(target, checkout, "list", "schemes")
    assert listed.returncode == 0 and "NVFP4" in listed.stdout, listed.stderr[-2000:]
