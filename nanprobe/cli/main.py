"""``nanprobe``: the entry point, the command table and the one place where errors become exit statuses."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import IO, NoReturn

from nanprobe._version import __version__
from nanprobe.cli.context import CLIContext
from nanprobe.errors import InputError

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_CLEAN", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_NONFINITE",
           "build_parser", "entry", "main"]

# Command name -> module defining HELP, add_arguments(parser) and run(args, ctx) -> int.
COMMANDS: dict[str, str] = {
    "trace": "nanprobe.cli.cmd_trace",
    "scan": "nanprobe.cli.cmd_scan",
    "report": "nanprobe.cli.cmd_report",
    "replay": "nanprobe.cli.cmd_replay",
    "precision": "nanprobe.cli.cmd_precision",
    "demo": "nanprobe.cli.cmd_demo",
}

EXIT_CLEAN = 0
EXIT_NONFINITE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

DESCRIPTION = "Find where a PyTorch model goes NaN, why, and keep it from coming back."
EPILOG = """\
exit status (every command):
  0  clean: nothing non-finite found
  1  something non-finite was found, and the diagnosis was printed
  2  the input or the command was wrong (one line on stderr; --debug shows the traceback)
  3  nanprobe itself failed (a bug: please report it with the --debug output)
  130  interrupted (Ctrl-C)

examples:
  nanprobe trace run/ckpt.pt                       # a checkpoint written by nanprobe's monitor or ur4rec
  nanprobe trace ckpt.pt --model mypkg.models:build --batches bad_batch.pt --json report.json
  nanprobe scan ckpt.pt --top 10                   # look at the tensors without running the model

run `nanprobe COMMAND --help` for a command's options."""


class UsageError(InputError):
    """A command line argparse rejected (wrong flag, bad choice, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so the error policy stays in one place."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so `nanprobe --debug trace` and `nanprobe trace --debug` both work.
    default: object = False if top else argparse.SUPPRESS
    known = parser._option_string_actions  # a command module may define them itself
    if "--debug" not in known:
        parser.add_argument("--debug", action="store_true", default=default,
                            help="show full tracebacks instead of one-line errors")
    if "--no-color" not in known:
        parser.add_argument("--no-color", action="store_true", default=default,
                            help="plain text output without colors or styles (NO_COLOR is honoured too)")


def load_commands(names: Sequence[str] | None = None) -> dict[str, ModuleType]:
    """Import the command modules; one that does not exist yet (ModuleNotFoundError for exactly that module)
    is left out. Any other import error is a bug and propagates."""
    modules: dict[str, ModuleType] = {}
    for name, module_name in COMMANDS.items():
        if names is not None and name not in names:
            continue
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
    return modules


def build_parser(commands: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    commands = load_commands() if commands is None else commands
    parser = _Parser(prog="nanprobe", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nanprobe {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in commands.items():
        help_text: str = module.HELP
        summary = help_text.strip().splitlines()[0]
        command_parser = sub.add_parser(
            name, help=summary, description=help_text, epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command_parser)
        _add_common(command_parser, top=False)
        command_parser.set_defaults(_run=module.run)
    return parser


def _wants(argv: Sequence[str], flag: str) -> bool:
    return flag in argv[: argv.index("--")] if "--" in argv else flag in argv


def main(argv: list[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the command line and return the exit status (never raises SystemExit; ``entry`` does)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Errors before parsing completes still follow --debug/--no-color when they were given.
    ctx = CLIContext.create(no_color=_wants(argv, "--no-color"), debug=_wants(argv, "--debug"),
                            stdout=stdout, stderr=stderr)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help / --version printed and asked to exit
            return int(e.code or 0) if isinstance(e.code, int) or e.code is None else EXIT_BAD_INPUT
        ctx = CLIContext.create(no_color=args.no_color, debug=args.debug, stdout=stdout, stderr=stderr)
        if getattr(args, "_run", None) is None:
            names = ", ".join(name for name in COMMANDS if name in _choices(parser))
            raise UsageError(f"no command given; choose one of {names} (see `nanprobe --help`)")
        return int(args._run(args, ctx))
    except KeyboardInterrupt:
        ctx.error("interrupted")
        return EXIT_INTERRUPTED
    except InputError as e:
        if ctx.debug:
            traceback.print_exc(file=ctx.err.file)
        ctx.error(_one_line(str(e)))
        return EXIT_BAD_INPUT
    except Exception as e:
        if ctx.debug:
            traceback.print_exc(file=ctx.err.file)
        ctx.error(f"internal error: {type(e).__name__}: {_one_line(str(e))} "
                  "(this is a bug in nanprobe; rerun with --debug and report the traceback)")
        return EXIT_INTERNAL


def _choices(parser: argparse.ArgumentParser) -> dict[str, object]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _one_line(message: str) -> str:
    return " ".join(message.split())


def entry() -> NoReturn:
    """The ``nanprobe`` console script (its own process: freed memory goes back to the OS)."""
    from nanprobe.cli.memory import release_freed_memory

    release_freed_memory()
    sys.exit(main())


if __name__ == "__main__":
    entry()
