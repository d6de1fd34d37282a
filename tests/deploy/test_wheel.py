"""The project builds into a wheel that installs into a fresh venv and runs.

`python -m build --wheel` (PyPA's build, in an isolated environment with the
setuptools pyproject.toml asks for) on a copy of the sources, so the work tree
gets no build/ or egg-info; then a new venv installs the wheel, its
dependencies coming from the package index, and its `hypercore` command runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import hypercore

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "hypercore"


def run(*argv: str | Path, timeout: float = 300, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def package_files() -> set[str]:
    """What the package is made of: every file under src/hypercore but bytecode."""
    return {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, sources / name)
    shutil.copytree(ROOT / "src", sources / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, sources)
    wheels = list(dist.glob("hypercore-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert wheels[0].name.startswith(f"hypercore-{version}-py3-none-any"), wheels[0].name

    # Everything the package is made of is in the wheel: modules, and data files such as the web console's.
    in_wheel = set(zipfile.ZipFile(wheels[0]).namelist())
    assert not package_files() - in_wheel, f"missing from the wheel: {sorted(package_files() - in_wheel)}"
    assert f"hypercore-{version}.dist-info/entry_points.txt" in in_wheel

    venv = tmp_path / "v"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheels[0])
    out = run(venv / "bin" / "hypercore", "--version", cwd=tmp_path)
    assert out.strip() == f"hypercore, version {version}" and version == hypercore.__version__, out
    # It is the installed copy that runs, and it works: the example policies validate.
    where = run(venv / "bin" / "python", "-c", "import hypercore; print(hypercore.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv)), where
    run(venv / "bin" / "hypercore", "policy", "validate", *sorted((ROOT / "examples" / "policies").glob("*.json")),
        cwd=tmp_path)
