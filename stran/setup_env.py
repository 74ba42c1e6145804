"""Build a virtual environment from a lock file, failing in one clear line (stdlib only: runs before anything is installed).

``make setup`` calls ``python stran/setup_env.py VENV LOCK [--editable .]``. It

1. checks that every line of the lock names a registry package by name and exact version
   (``name==1.2.3``, optionally with ``--hash``): no local path, no ``file:`` or other URL, no
   ``-e``/``-r``/index options, no local version label such as ``+cpu`` (those builds are not on PyPI);
2. creates the environment if needed and installs the lock with ``pip --no-deps``, pip's output going to
   ``VENV/setup.log``;
3. on a pip failure prints one line saying which package could not be installed and why, and where the log is.

``check_requirement_text`` is what the unit test runs over every file under ``requirements/`` and ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import venv
from pathlib import Path

# name==version (PEP 440 public version, no local label), optional environment marker, optional hashes
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[A-Za-z0-9_,.-]+\])?==(?P<version>[0-9][A-Za-z0-9.!]*)"
    r"(?:\s*;\s*[^#]+?)?(?:\s+--hash=sha256:[0-9a-f]{64})*$"
)
# a dependency in pyproject.toml: name, optional extras, optional specifiers (never "@ URL")
_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9_,.-]+\])?\s*(?:[<>=!~]=?\s*[0-9][^@]*)?(?:;[^@]*)?$")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each requirement, joining backslash continuations and dropping comments."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not buf:
            start = i
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append((start, " ".join(buf.split())))
        buf = ""
    if buf.strip():
        out.append((start, " ".join(buf.split())))
    return out


def check_requirement_text(text: str, source: str) -> list[str]:
    """Problems of a lock / requirements file: one message per line that is not ``name==version`` from the registry."""
    problems = []
    for n, line in _logical_lines(text):
        if not _PIN.match(line):
            why = "a local path or URL" if re.search(r"(@|file:|https?:|^[./~]|^-e|^--)", line) else "not name==version"
            if re.match(r"^[A-Za-z0-9._-]+==[^ ;]*\+", line):
                why = "a local version label (+...), which the package registry does not serve"
            problems.append(f"{source}:{n}: '{line}' is {why}; write the registry pin name==version")
    return problems


def check_pyproject_text(text: str, source: str) -> list[str]:
    """Problems in ``pyproject.toml``: a dependency (``dependencies``, ``requires``, optional dependencies and
    dependency groups) that points at a path or URL instead of a registry name."""
    problems = []
    section, in_list = "", False
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[] ")
            continue
        key = re.match(r"^([A-Za-z0-9_.-]+)\s*=\s*\[", line)
        if key:
            in_list = key.group(1) in ("dependencies", "requires") or section in (
                "project.optional-dependencies", "dependency-groups"
            )
        if in_list:
            for spec in re.findall(r'"([^"]*)"', line):
                if not _SPEC.match(spec.strip()):
                    problems.append(f"{source}:{n}: '{spec}' is not a registry package name with a version range")
        if "]" in line and not line.startswith("["):
            in_list = False
    return problems


def _pip_failure(log: str) -> str:
    """The one line that says what pip could not do."""
    for pattern in (
        r"No matching distribution found for (\S+)",
        r"Could not find a version that satisfies the requirement (\S+)",
        r"(?:Could not install|Invalid requirement|Directory|File) .*",
        r"ERROR: (.*)",
    ):
        m = re.search(pattern, log)
        if m:
            found = m.group(1) if m.groups() else m.group(0)
            if pattern.startswith("No matching") or pattern.startswith("Could not find"):
                return f"{found} is not available from the package registry (no network, or no such version)"
            return found.strip()
    lines = [x for x in log.splitlines() if x.strip()]
    return lines[-1] if lines else "pip failed without a message"


def install(venv_dir: Path, lock: Path, editable: Path | None) -> int:
    problems = check_requirement_text(lock.read_text(encoding="utf-8"), str(lock))
    if problems:
        print(f"setup: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""), file=sys.stderr)
        return 2
    python = venv_dir / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    log_path = venv_dir / "setup.log"
    print(f"setup: installing {lock} into {venv_dir} (pip's output: {log_path})", flush=True)
    steps = [[str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "-r", str(lock)]]
    if editable is not None:
        steps.append(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
             "--no-build-isolation", "-e", str(editable)]
        )
    with log_path.open("w", encoding="utf-8") as log:
        for cmd in steps:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            log.write(done.stdout)
            if done.returncode != 0:
                print(f"setup: installing {lock} into {venv_dir} failed: {_pip_failure(done.stdout)} "
                      f"(pip's full output: {log_path})", file=sys.stderr)
                return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("lock", type=Path)
    parser.add_argument("--editable", type=Path, help="also install this project folder in editable mode")
    args = parser.parse_args(argv)
    return install(args.venv, args.lock, args.editable)


if __name__ == "__main__":
    sys.exit(main())
