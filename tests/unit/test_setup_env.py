"""Every install line is a registry pin; the set-up fails in one clear line, not a pip traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stran.setup_env import check_pyproject_text, check_requirement_text, install

ROOT = Path(__file__).resolve().parents[2]


def test_every_requirements_file_and_pyproject_names_registry_pins_only():
    files = sorted(p for p in (ROOT / "requirements").rglob("*") if p.is_file())
    assert files, "no files under requirements/"
    problems = []
    for path in files:
        problems += check_requirement_text(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    problems += check_pyproject_text((ROOT / "pyproject.toml").read_text(encoding="utf-8"), "pyproject.toml")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line,why",
    [
        ("monailabel @ file:///tmp/dl/monailabel-0.8.5-py3-none-any.whl#sha256=00", "local path or URL"),
        ("numpy @ https://example.org/numpy-1.26.4.whl", "local path or URL"),
        ("./wheels/pkg-1.0-py3-none-any.whl", "local path or URL"),
        ("/opt/wheels/pkg-1.0-py3-none-any.whl", "local path or URL"),
        ("-e /home/someone/stran", "local path or URL"),
        ("--find-links /opt/wheels", "local path or URL"),
        ("torch==2.13.0+cpu", "local version label"),
        ("numpy>=1.24", "not name==version"),
        ("scipy", "not name==version"),
    ],
)
def test_bad_lock_lines_are_named_with_their_line_number(line, why):
    text = f"# a comment\nattrs==26.1.0\n{line}\nsix==1.17.0 \\\n    --hash=sha256:{'0' * 64}\n"
    (problem,) = check_requirement_text(text, "requirements/x.lock")
    assert problem.startswith("requirements/x.lock:3: ") and why in problem and line.split()[0] in problem


def test_good_lock_lines_pass():
    text = "numpy==1.26.4\nPyYAML==6.0.4  # comment\npsycopg[binary]==3.3.9\ntzdata==2026.6 ; python_version >= '3.9'\n"
    assert check_requirement_text(text, "x") == []


def test_pyproject_dependency_urls_are_named():
    text = (
        '[project]\ndependencies = [\n  "numpy>=1.24,<2",\n  "foo @ file:///tmp/foo.whl",\n]\n'
        '[tool.setuptools.packages.find]\ninclude = ["stran*"]\n'
    )
    (problem,) = check_pyproject_text(text, "pyproject.toml")
    assert problem.startswith("pyproject.toml:4: ") and "foo @ file:" in problem


def test_setup_refuses_a_local_path_before_creating_anything(tmp_path, capsys):
    lock = tmp_path / "server.lock"
    lock.write_text("six==1.17.0\nmonailabel @ file:///tmp/dl/monailabel-0.8.5.whl\n")
    assert install(tmp_path / "venv", lock, None) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "server.lock:2" in err and "local path or URL" in err
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_setup_reports_an_unavailable_package_in_one_line(tmp_path):
    lock = tmp_path / "bad.lock"
    lock.write_text("stran-scar-no-such-package-on-any-registry==0.0.1\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stran" / "setup_env.py"), str(tmp_path / "venv"), str(lock)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert "stran-scar-no-such-package-on-any-registry==0.0.1 is not available from the package registry" in err
    assert (tmp_path / "venv" / "setup.log").is_file()
