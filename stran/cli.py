"""The ``stran`` command line. Each subcommand lives in the module that owns its feature.

A command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Command modules keep heavy imports (torch, monai, sqlalchemy, matplotlib) inside ``run``
so that building the parser stays fast. A user's mistake ends in one line on stderr and exit status 2
(``stran.errors``); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import platform
import sys
import textwrap
from collections.abc import Collection
from importlib import metadata
from pathlib import Path
from typing import Any

import stran
from stran.errors import BUG_EXIT, USAGE_EXIT, bug_line, user_error_line
from stran.memory import keep_freed_memory
from stran.resources import DEFAULT_MODEL, describe_model

COMMANDS: dict[str, str] = {
    "inspect": "stran.io.inspect_command",
    "import": "stran.io.import_command",
    "phantom": "stran.phantom.command",
    "detect": "stran.engine.detect_command",
    "train": "stran.engine.train_command",
    "evaluate": "stran.engine.evaluate_command",
    "export": "stran.resultsdb.export_command",
    "demo": "stran.demo",
    "serve": "stran.serve",
}

VERSIONED = ("torch", "monai", "monailabel", "numpy", "pydicom")
#: Optional packages that ``import monai`` pulls in eagerly when they are installed and that ``stran detect`` never
#: uses through MONAI (about 40 % of the detect path's imports; training/bench_cli.py measures it).
MONAI_EXTRAS = ("ignite", "matplotlib", "sklearn", "itk", "skimage", "scipy.signal", "yaml")
#: Commands that, run as the ``stran`` program, import MONAI without :data:`MONAI_EXTRAS` and skip the interpreter's
#: teardown at exit (the start-up cuts of docs/cli.md).
LEAN_COMMANDS = ("detect",)


def _fill_model(text: str | None, *, percent_format: bool) -> str | None:
    if text and DEFAULT_MODEL in text:
        about = describe_model()
        return text.replace(DEFAULT_MODEL, about.replace("%", "%%") if percent_format else about)
    return text


class HelpFormatter(argparse.HelpFormatter):
    """Fills in the default model's line only when a help text is printed (hashing it on every start would cost)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:  # argparse %-formats argument help
        return _fill_model(super()._get_help_string(action), percent_format=True)

    def _format_text(self, text: str) -> str:  # descriptions and epilogs: %-formatted only when they hold %(prog)
        return super()._format_text(_fill_model(text, percent_format="%(prog)" in text) or "")

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Wrapped at spaces only: a path such as /data/my-studies/best.pt stays whole (on a line of its own when
        it is longer than the line), to copy from the help."""
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False,
                             break_long_words=False)


def version_text() -> str:
    """``stran --version``: this package, Python, the default model and the key dependencies (no imports)."""

    def version(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return f"{name} (not installed)"

    return "\n".join([
        f"stran {stran.__version__} ({Path(stran.__file__).parent})",
        f"Python {platform.python_version()} ({sys.executable})",
        f"default model: {describe_model()}",
        ", ".join(version(name) for name in VERSIONED),
    ])


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only ``commands`` (default: all) get their arguments, the others only their help line."""
    parser = argparse.ArgumentParser(
        prog="stran", formatter_class=HelpFormatter,
        description="ST-RAN Scar: contrast-free scar detection from SAX cine MRI.",
        epilog=f"Default model: {DEFAULT_MODEL}. Set STRAN_MODEL to use another checkpoint by default.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of stran, Python, the default model and key dependencies")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if commands is None or name in commands:
            module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def import_monai_lean() -> None:
    """Import MONAI with :data:`MONAI_EXTRAS` hidden, so that it does not pull them in; they import normally
    afterwards. Only for a process that is one stran command: MONAI's features that need them stay off in it."""
    if "monai" in sys.modules:
        return
    hidden = [name for name in MONAI_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import monai  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def _end_without_teardown(outcome: dict[str, int]) -> None:
    """The last exit handler: once the command has returned, end the process without the interpreter's module
    teardown (about a second with torch loaded; training/bench_cli.py). Every other exit handler has run."""
    if "status" in outcome:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(outcome["status"])


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv=None`` means this process is the ``stran`` program (``sys.argv``)."""
    own_process = argv is None
    keep_freed_memory()  # stran.memory: activations reuse freed memory instead of new page faults
    args_list = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    args = build_parser([first] if first in COMMANDS else []).parse_args(args_list)
    lean = own_process and args.command in LEAN_COMMANDS
    outcome: dict[str, int] = {}
    if lean:
        atexit.register(_end_without_teardown, outcome)  # registered first, so it runs last
    status = _run(args, lean)
    outcome["status"] = status
    return status


def _run(args: argparse.Namespace, lean: bool) -> int:
    try:
        if lean:
            import_monai_lean()
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"stran {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        line = user_error_line(args.command, exc)
        print(line or bug_line(args.command, exc), file=sys.stderr)
        return USAGE_EXIT if line else BUG_EXIT


if __name__ == "__main__":
    sys.exit(main())
