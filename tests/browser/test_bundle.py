"""The committed bundle is exactly what the pinned sources build, and stays inside its size budget."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jobtrail.flask.browser_kit import browser_kit_bundle

REPO = Path(__file__).resolve().parents[2]
KIT_DIR = REPO / "instrumentation" / "browser"
BUNDLE = REPO / "instrumentation" / "src" / "jobtrail" / "flask" / "static" / "jobtrail.js"
GZIP_BUDGET_BYTES = 40 * 1024
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def test_package_json_pins_exact_versions_that_the_lockfile_resolves():
    package = json.loads((KIT_DIR / "package.json").read_text())
    lock = json.loads((KIT_DIR / "package-lock.json").read_text())
    pinned = {**package["dependencies"], **package["devDependencies"]}

    assert all(EXACT_VERSION.fullmatch(version) for version in pinned.values()), pinned
    for name, version in pinned.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert lock["packages"][""]["dependencies"] == package["dependencies"]


def test_stable_packages_are_one_release_set():
    """The 2.x SDK packages resolve to one release (no second copy of the core or of the tracer)."""
    lock = json.loads((KIT_DIR / "package-lock.json").read_text())
    copies = [path for path in lock["packages"] if path.endswith("/@opentelemetry/core") or path.endswith("/api")]
    assert copies == ["node_modules/@opentelemetry/api", "node_modules/@opentelemetry/core"]
    stable = {
        lock["packages"][f"node_modules/@opentelemetry/{name}"]["version"]
        for name in ("core", "resources", "sdk-trace", "sdk-trace-base", "sdk-trace-web")
    }
    assert len(stable) == 1


def test_bundle_is_within_the_gzip_budget():
    assert len(gzip.compress(browser_kit_bundle(), compresslevel=9)) <= GZIP_BUDGET_BYTES


@pytest.mark.slow
def test_rebuilding_from_the_lockfile_gives_the_committed_bundle(tmp_path):
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm and node are needed to rebuild the browser kit")
    work = tmp_path / "browser"
    work.mkdir()
    for name in ("package.json", "package-lock.json", "build.mjs"):
        shutil.copy2(KIT_DIR / name, work / name)
    shutil.copytree(KIT_DIR / "src", work / "src")

    rebuilt_path = work / "jobtrail.js"
    env = {**os.environ, "JOBTRAIL_KIT_OUT": str(rebuilt_path)}
    for command in ([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], ["node", "build.mjs"]):
        finished = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300, env=env)
        assert finished.returncode == 0, f"{' '.join(command)} failed:\n{finished.stdout}\n{finished.stderr}"

    assert rebuilt_path.read_bytes() == BUNDLE.read_bytes(), (
        f"{BUNDLE} is stale: run `npm ci && npm run build` in instrumentation/browser"
    )
