"""The ``stran`` command line. Each subcommand lives in the module that owns its feature.

A command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Command modules keep heavy imports (torch, monai) inside
``run`` so that building the parser stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stran", description="ST-RAN Scar: contrast-free scar detection from SAX cine MRI.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
