"""The ``adaptive-pool`` command.

Each subcommand lives in its own module and is imported only when it runs,
so ``adaptive-pool --help`` stays instant and never loads scikit-learn.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("adaptive_pool._demo", "run real workloads and show each decision and its speed"),
    "bench": ("adaptive_pool._bench", "benchmark AutoExecutor against the standard library and joblib"),
    "collect": ("adaptive_pool.training.cli", "collect labelled timings on this machine"),
    "train": ("adaptive_pool.training.cli", "fit a model on collected timings"),
    "retrain": ("adaptive_pool.training.cli", "collect, train and install a model for this machine"),
    "info": ("adaptive_pool.training.cli", "show which model AutoExecutor uses"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each module adds its own options."""
    parser = argparse.ArgumentParser(
        prog="adaptive-pool",
        description="An executor that picks threads, processes or inline batches per function.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log decisions (DEBUG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, add_help=False)
        command.set_defaults(_module=module_name)
        command.add_argument("--_lazy", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``adaptive-pool`` and ``python -m adaptive_pool``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first, then let its module define its options.
    known, _ = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(known._module)
    command_parser = argparse.ArgumentParser(
        prog=f"adaptive-pool {known.command}", description=_COMMANDS[known.command][1]
    )
    command_parser.add_argument("-v", "--verbose", action="store_true", help="log decisions (DEBUG)")
    module.add_arguments(known.command, command_parser)
    rest = [a for a in argv if a != known.command]
    args = command_parser.parse_args(rest)
    if args.verbose:
        import logging

        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        logging.getLogger("adaptive_pool").setLevel(logging.DEBUG)
    result: int = module.run(known.command, args)
    return result


if __name__ == "__main__":
    sys.exit(main())
