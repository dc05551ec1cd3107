"""The wheel holds everything esl-app reads at run time, and works installed outside the checkout.

A checkout (or an editable install) reads files from the source tree, so it hides what a wheel lacks:
these tests build the real wheel and look inside it. ``.ci/run`` goes further (a fresh venv with the
dependencies, ``serve`` + a call, ``db migrate --seed``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("esl_app", "callflows")
# what a source tree holds but a build must not look at (and a stale build/ would leak into the wheel)
NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".hypothesis", ".*_cache", "fixtures"
)
BUILD_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of the checkout, offline (no build isolation)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (work / "dist").glob("esl_app-*.whl")
    return built


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def source_files(package: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_ships_the_migrations_the_demo_data_and_callflows(wheel: Path):
    names = wheel_names(wheel)
    migrations = sorted(p.name for p in (ROOT / "esl_app/data/migrations").glob("*.sql"))
    assert migrations, "no migration in esl_app/data/migrations"
    assert {f"esl_app/data/migrations/{name}" for name in migrations} <= names
    assert "esl_app/data/demo_data.json" in names
    assert {"callflows/__init__.py", "callflows/demo.py"} <= names
    assert "esl_app/bench/servers/esl_app_server.py" in names  # esl-app bench --suite runs them with -m


def test_every_file_of_the_packages_is_in_the_wheel(wheel: Path):
    """A data file added to esl_app/ without a package-data entry fails here, not in a user's install."""
    names = wheel_names(wheel)
    for package in PACKAGES:
        missing = sorted(source_files(package) - names)
        assert not missing, f"in the source tree, not in the wheel: {missing}"


def test_the_wheel_holds_no_test_or_checkout_files(wheel: Path):
    tops = {name.split("/", 1)[0] for name in wheel_names(wheel)}
    assert tops == {"esl_app", "callflows", next(t for t in tops if t.endswith(".dist-info"))}


def test_the_wheel_declares_the_command_and_the_pytest_plugin(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "esl-app = esl_app.cli:main" in text
    assert "esl_app = esl_app.testing.plugin" in text


def test_the_installed_wheel_runs_the_demo_away_from_the_checkout(wheel: Path, tmp_path: Path):
    """Installed into a bare directory (dependencies from this venv), run from elsewhere: the demo's
    data comes from the installed package, not from the source tree."""
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESL_APP_")}
    env["PYTHONPATH"] = str(target)  # ahead of the editable install of this checkout
    show = "import esl_app.data.settings as s, callflows; print(s.__file__); print(callflows.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", show],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(target) for line in where.stdout.split()), where.stdout
    demo = subprocess.run(
        [sys.executable, "-m", "esl_app.cli", "demo", "--calls", "5"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "5 calls (0 failed)" in demo.stdout
    assert f"from {target}" in demo.stderr  # "routing data: embedded, N objects from <the installed file>"


@pytest.mark.parametrize("name", ["esl-app", "gevent-minimal", "greenswitch"])  # genesis: the bench extra
def test_the_bench_servers_start_from_the_package_in_any_directory(name: str, tmp_path: Path, monkeypatch):
    """``esl-app bench --suite`` starts them with ``python -m``: no bench/ folder of a checkout needed."""
    from esl_app.bench.runner import SERVERS, Server

    monkeypatch.chdir(tmp_path)
    server = Server(SERVERS[name], cpus=[])
    try:
        assert server.port > 0
        assert server.proc.poll() is None
    finally:
        server.stop()
