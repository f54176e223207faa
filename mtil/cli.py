"""`mtil` entry point: a thin argparse layer over the library; `main(argv)` is what tests call."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .errors import exit_status

log = logging.getLogger("mtil")

# subcommand -> (module under mtil.commands, one-line help); those in TAKES_OVERRIDES also get --set KEY=VALUE
COMMANDS = {
    "run": ("run", "train and evaluate a task sequence from a YAML config"),
    "demo": ("demo", "run the whole pipeline offline on the embedded demo stream"),
    "check": ("check", "preflight a config: data, model and device checked, time and memory projected, nothing written"),
    "report": ("report", "Transfer / Avg / Last tables of run directories beside published rows"),
    "compare": ("compare", "run a methods (x policies) x seeds grid and write one table and one figure"),
    "plot": ("plot", "write the figures of a run directory"),
    "status": ("status", "how far a run directory is (running or interrupted) and its partial matrix"),
    "prepare": ("prepare", "convert a dataset into mtil's prepared on-disk format"),
    "plasticity": ("plasticity", "the DynamicMoE plasticity study (chunked continual stream)"),
    "bench": ("bench", "speed and memory ratios measured in one run"),
    "rl": ("rl", "DynamicMoE in RL: PPO with MoE-SimBa blocks (needs the [rl] extra); --compare for the study"),
    "study": ("study", "a study over many runs: merge (freeze vs merge and its controls, paired by seed)"),
}
TAKES_OVERRIDES = {"run", "check", "demo", "compare", "plasticity", "rl", "study"}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="mtil", description="Multi-domain task-incremental learning with CLIP "
                                     "and mixture-of-experts adapters.")
    parser.add_argument("--version", action="version", version=f"mtil {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        modules[name] = importlib.import_module(f"mtil.commands.{module_name}")
        modules[name].add_arguments(p)
        if name in TAKES_OVERRIDES:
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    return parser, modules


class OwnLines(logging.Filter):
    """The quiet console: mtil's own INFO and above, other libraries' lines only from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name == "mtil" or record.name.startswith("mtil.")


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is when a line is logged."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def console_handler(verbose: bool, stream=None) -> logging.Handler:
    """The console's log handler (to `stream`, default the current stderr): quiet (`OwnLines`) unless `verbose`."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S"))
    if not verbose:
        handler.addFilter(OwnLines())
    return handler


def configure_logging(verbose: bool) -> None:
    """Log lines to stderr through `console_handler`: quiet by default (Python warnings become log lines, so other
    libraries' warnings are dropped too, and the datasets library draws no progress bars); `--verbose`: every
    library's lines from DEBUG. Like logging.basicConfig, nothing changes when the host (pytest, a notebook) has
    configured logging already."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.captureWarnings(True)
    if not verbose:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    root.addHandler(console_handler(verbose))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return 2
    return exit_status(lambda: modules[args.command].execute(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
