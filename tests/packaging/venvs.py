"""Fresh virtualenvs with jobtrail's wheel installed beside a chosen set of packages, cached between runs.

A virtualenv is built once per (pins, extras, pyproject.toml, locks, Python) under ``.cache/packaging/``
(git-ignored): what pip resolved then is kept as ``before.json`` (the pins alone) and ``after.json`` (plus
jobtrail and its dependencies). The wheel is rebuilt when a source file changes and reinstalled into the
cached virtualenvs without touching their other packages, so a warm run checks the current code in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "packaging"
SOURCE_ROOTS = ("instrumentation/src", "collector_processor/src", "demo_app/src")
KEY_FILES = ("pyproject.toml", "requirements.lock", "requirements-rq2.lock")
PIP = ("-m", "pip", "--disable-pip-version-check", "--no-input")
DONE = ".complete"


def _digest(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def source_key() -> str:
    """Changes whenever anything that goes into the wheel changes."""
    files = [REPO / "pyproject.toml", REPO / "README.md"]
    for root in SOURCE_ROOTS:
        files += sorted(path for path in (REPO / root).rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    return _digest([part for path in files for part in (str(path.relative_to(REPO)).encode(), path.read_bytes())])


def wheel() -> Path:
    """jobtrail's wheel for the current sources (built by pip, as a user's CI would)."""
    folder = CACHE / "wheels" / source_key()
    built = sorted(folder.glob("jobtrail-*.whl"))
    if built:
        return built[0]
    with tempfile.TemporaryDirectory(prefix="jobtrail-wheel-") as tmp:
        _run([sys.executable, *PIP, "wheel", "-q", "--no-deps", "-w", tmp, str(REPO)])
        (made,) = Path(tmp).glob("jobtrail-*.whl")
        shutil.rmtree(folder.parent, ignore_errors=True)  # wheels of older sources
        folder.mkdir(parents=True)
        shutil.move(str(made), folder / made.name)
    return folder / made.name


@dataclass(frozen=True)
class Venv:
    path: Path

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def run(
        self, *command: str | Path, env: dict[str, str] | None = None, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """A command with this virtualenv's bin first on PATH and nothing of the repository on sys.path."""
        environ = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
        environ["PATH"] = f"{self.path / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
        environ.update(env or {})
        return subprocess.run(
            [str(part) for part in command],
            env=environ,
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def pip(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return self.run(self.bin("python"), *PIP, *args, timeout_s=900)  # a cold install downloads a lot

    def versions(self, snapshot: str | None = None) -> dict[str, str]:
        """Installed distributions (normalized name -> version), now or as recorded at creation."""
        text = (self.path / snapshot).read_text() if snapshot else _ok(self.pip("list", "--format", "json")).stdout
        return {_normalize(row["name"]): row["version"] for row in json.loads(text)}


def prepared(name: str, pins: tuple[str, ...], extras: str, afterwards: tuple[str, ...] = ()) -> Venv:
    """A virtualenv with ``pins``, then ``jobtrail[extras]`` from the wheel, then ``afterwards`` (test-only tools)."""
    parts = [name, *pins, extras, *afterwards, sys.version]
    key = _digest([part.encode() for part in parts] + [(REPO / f).read_bytes() for f in KEY_FILES])
    target = Venv(CACHE / f"{name}-{key}")
    current = wheel()
    if not (target.path / DONE).exists():
        for stale in CACHE.glob(f"{name}-*"):  # older keys, and a half-built one from an interrupted run
            shutil.rmtree(stale, ignore_errors=True)
        venv.create(target.path, with_pip=True)
        if pins:
            _ok(target.pip("install", "-q", *pins))
        (target.path / "before.json").write_text(_ok(target.pip("list", "--format", "json")).stdout)
        _ok(target.pip("install", "-q", f"jobtrail[{extras}] @ {current.as_uri()}"))
        (target.path / "after.json").write_text(_ok(target.pip("list", "--format", "json")).stdout)
        if afterwards:
            _ok(target.pip("install", "-q", *afterwards))
        (target.path / "wheel").write_text(current.name + current.parent.name)
        (target.path / DONE).write_text("")
    elif (target.path / "wheel").read_text() != current.name + current.parent.name:
        _ok(target.pip("install", "-q", "--no-deps", "--force-reinstall", str(current)))
        (target.path / "wheel").write_text(current.name + current.parent.name)
    return target


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _ok(run: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, run.args))} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def _run(command: list[str]) -> None:
    _ok(subprocess.run(command, capture_output=True, text=True, timeout=600))
