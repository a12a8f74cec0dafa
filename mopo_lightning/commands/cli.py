"""The ``mopo-lightning`` command (also ``python -m mopo_lightning.commands.cli``): the table of commands, each
with its entry point in ``commands/``, and the exit codes.

Commands (``COMMANDS`` below; each takes ``--help``, ``--config FILE.yaml`` and ``--print_config``):

============  ===========================================  =====================================
command       what it does                                 declared by
============  ===========================================  =====================================
fit           dynamics ensemble, then SAC on the            ``commands.fit.MOPOCLI`` (LightningCLI)
              penalised model
collect       behaviour data from the real MuJoCo env       ``commands.collect.collect``
              (``--policy sac``: online SAC, resumable)
data info     summary of a D4RL-schema HDF5 file            ``commands.data_info.main_info``
report        the paper's tables from run directories       ``commands.report.main``
select        a run per dataset from offline estimates      ``commands.select.main``
sweep         a grid of fit runs as trials on Ray Tune      ``commands.sweep.sweep``
============  ===========================================  =====================================

A command other than ``fit`` is a typed function: its signature is the options, its docstring the
help (``commands/signature.py``). A new command (e.g. ``sweep``) is one more ``Command`` line.

Exit codes (``ExitCode``), the same for every command:

====  =====================================================================================
code  fault
====  =====================================================================================
0     none
1     non-finite training numbers (``guards.NonFiniteError``)
2     bad usage or config: a parse error (unknown key, bad value or type, missing option,
      missing config file) or ``guards.ConfigError``, among them a name no registry knows
      (``guards.UnknownName``: a task, a penalty kind, a D4RL name, a Minari id), with the closest one
3     bad data: ``data.errors.DatasetError``, or a missing input file (``FileNotFoundError``)
4     bad checkpoint (``guards.CheckpointError``)
5     file-system fault: any other ``OSError`` (permission denied, read-only directory, disk full)
130   SIGINT, 143 SIGTERM (``callbacks.checkpointing.GracefulStop``, after a checkpoint)
====  =====================================================================================

A fault ends with one line on stderr, ``mopo-lightning: error: <message>`` (parse errors:
``mopo-lightning COMMAND: error: <key or value> ...; see mopo-lightning COMMAND --help``), and no
traceback; ``MOPO_TRACEBACK=1`` re-raises the exception instead. A fault that a library wrapped (jsonargparse
raises a ``ValueError`` naming the link whose function failed) is reported as its cause (``fault``). Any other
exception is a bug: Python prints its traceback and exits with 1.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

# Before torch loads (every command imports it lazily, below): OpenMP threads waiting for work sleep instead of
# spinning. With another process busy on a small machine, spinning made 2 threads 1.4x-10x slower than 1;
# PASSIVE kept them within ~8% of 1 thread (docs/performance.md, "Threads"). A value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROG = "mopo-lightning"


class ExitCode(IntEnum):
    """Exit status by kind of fault; see the module docstring."""

    OK = 0
    NON_FINITE = 1
    USAGE = 2
    DATA = 3
    CHECKPOINT = 4
    FILESYSTEM = 5


@dataclass(frozen=True)
class Command:
    """One command: the words that name it and the function that declares and runs it."""

    name: str
    """Words after ``mopo-lightning``: ``collect``, ``data info``."""
    target: str
    """``module:function``: a typed function (signature = options, docstring = help), or for ``fit`` the
    LightningCLI's ``main``; imported only when the command runs."""
    summary: str
    """One line for ``mopo-lightning --help``."""
    lightning: bool = False
    """Parsed and run by the LightningCLI (``commands.fit.MOPOCLI``) rather than by ``function_parser``."""

    @property
    def words(self) -> list[str]:
        return self.name.split()


COMMANDS: tuple[Command, ...] = (
    Command("fit", "mopo_lightning.commands.fit:main",
            "train MOPO: the dynamics ensemble, then SAC on the penalised model (LightningCLI)", lightning=True),
    Command("collect", "mopo_lightning.commands.collect:collect",
            "collect a D4RL-schema dataset in the real MuJoCo env (--policy sac: online SAC, resumable)"),
    Command("data info", "mopo_lightning.commands.data_info:main_info",
            "summarise a D4RL-schema dataset (--json for JSON)"),
    Command("report", "mopo_lightning.commands.report:main",
            "the paper's tables (D4RL scores, OOD returns) from run directories"),
    Command("select", "mopo_lightning.commands.select:main",
            "choose a run per dataset from offline value estimates (no real env), then score the choice"),
    Command("sweep", "mopo_lightning.commands.sweep:sweep",
            "run a grid of seeds x hyper-parameters of one fit config as trials on Ray Tune (resumable)"),
)

EXIT_HELP = ("exit codes: 0 ok, 1 non-finite training numbers, 2 bad usage or config, 3 bad data, "
             "4 bad checkpoint,\n  5 file-system fault, 130/143 stopped by SIGINT/SIGTERM")


def overview(commands: Sequence[Command] = COMMANDS) -> str:
    """The short text of ``mopo-lightning --help``."""
    width = max(len(c.name) for c in commands) + 2
    lines = [f"usage: {PROG} COMMAND [options]", "",
             "MOPO, model-based offline policy optimisation (Yu et al. 2020), on Lightning.", "", "commands:"]
    lines += [f"  {c.name.ljust(width)}{c.summary}" for c in commands]
    lines += ["", f"Run `{PROG} COMMAND --help` for a command's options; every command also takes",
              "--config FILE.yaml and --print_config.", EXIT_HELP]
    return "\n".join(lines)


class UsageError(Exception):
    """A command line that does not parse; the message names the key or value and says what to do."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class CommandExit(SystemExit):
    """``SystemExit(code)`` that also carries the one line printed before it (``str()`` gives it)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def exit_code(error: BaseException) -> ExitCode | None:
    """The exit code of a fault, or None for an exception that is a bug (it keeps its traceback)."""
    from argparse import ArgumentError

    if isinstance(error, (UsageError, ArgumentError)):
        return ExitCode.USAGE  # before the imports below: a typo needs no torch
    from mopo_lightning.data.errors import DatasetError
    from mopo_lightning.guards import CheckpointError, ConfigError, NonFiniteError

    if isinstance(error, ConfigError):
        return ExitCode.USAGE
    if type(error).__name__ == "MisconfigurationException":  # Lightning's own config checks (Trainer args)
        return ExitCode.USAGE
    if isinstance(error, DatasetError):
        return ExitCode.DATA
    if isinstance(error, CheckpointError):
        return ExitCode.CHECKPOINT
    if isinstance(error, NonFiniteError):
        return ExitCode.NON_FINITE
    if isinstance(error, FileNotFoundError):  # an input named by the user: a config file, else data
        name = str(error.filename or "")
        return ExitCode.USAGE if name.endswith((".yaml", ".yml", ".json")) else ExitCode.DATA
    if isinstance(error, OSError):
        return ExitCode.FILESYSTEM
    return None


def fault(error: BaseException) -> BaseException:
    """The fault to report: ``error``, or the first exception along its ``__cause__`` chain that has an exit
    code, when ``error`` has none (a library's wrapper, e.g. jsonargparse's link error around a ``DatasetError``)."""
    cause: BaseException | None = error
    while cause is not None and exit_code(cause) is None:
        cause = cause.__cause__
    return error if cause is None else cause


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mopo-lightning`` console script; ``argv`` defaults to ``sys.argv[1:]``.

    Raises ``CommandExit`` (a ``SystemExit``) with the code of ``ExitCode`` after printing one line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if sys.platform.startswith("linux"):
        # Off-screen rendering (evaluation videos) on headless machines; gymnasium would try GLFW first.
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        run(args, from_sys_argv=argv is None)
    except Exception as raised:
        error = fault(raised)
        code = exit_code(error)
        if code is None or os.environ.get("MOPO_TRACEBACK"):
            raise
        from mopo_lightning.data.errors import one_line

        message = one_line(error) or type(error).__name__
        prog = error.prog if isinstance(error, UsageError) else PROG
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise CommandExit(int(code), message) from None


def find_command(args: Sequence[str]) -> tuple[Command, list[str]] | None:
    """The command that ``args`` names and the arguments after its name; None after printing a group's help."""
    for command in sorted(COMMANDS, key=lambda c: -len(c.words)):
        if list(args[: len(command.words)]) == command.words:
            return command, list(args[len(command.words):])
    group = [c for c in COMMANDS if len(c.words) > 1 and c.words[0] == args[0]]
    if group and (len(args) == 1 or args[1] in ("-h", "--help")):
        if len(args) == 1:
            raise UsageError(f"{PROG} {args[0]}", f"missing command after {args[0]!r}; one of: "
                             + ", ".join(c.name for c in group))
        print(overview(group))
        return None
    typed = " ".join(args[:2]) if group else args[0]
    names = [c.name for c in COMMANDS] + [c.words[0] for c in COMMANDS]
    close = difflib.get_close_matches(typed, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(PROG, f"unknown command {typed!r}{hint}; see {PROG} --help")


def run(args: list[str], from_sys_argv: bool = False) -> None:
    """Run the command that ``args`` names; parse errors become a one-line ``UsageError``."""
    from argparse import ArgumentError

    if not args or args[0] in ("-h", "--help"):
        print(overview())
        return
    found = find_command(args)
    if found is None:
        return
    command, rest = found
    check_config_syntax(rest)
    prog = f"{PROG} {command.name}"
    module, name = command.target.split(":")
    function = getattr(importlib.import_module(module), name)
    if command.lightning:
        try:
            with warnings.catch_warnings():  # in-process calls (tests) pass args while sys.argv is pytest's
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                function(None if from_sys_argv else args)  # None: LightningCLI reads sys.argv itself
        except ArgumentError as err:
            raise UsageError(prog, _short(str(err), _lightning_options(), prog)) from err
        return
    from mopo_lightning.commands.signature import function_parser, option_names, run_function

    parser = function_parser(function, prog)
    try:
        run_function(function, parser, rest)
    except ArgumentError as err:
        raise UsageError(prog, _short(str(err), option_names(parser), prog)) from err


def check_config_syntax(args: Sequence[str]) -> None:
    """Every ``--config FILE`` that exists must parse as YAML: a syntax error is one line (file:line:column),
    exit 2, before any command starts (jsonargparse would bury it in a generic parse error)."""
    from pathlib import Path

    from mopo_lightning.files import read_yaml

    for i, token in enumerate(args):
        path = args[i + 1] if token == "--config" and i + 1 < len(args) else (
            token.split("=", 1)[1] if token.startswith("--config=") else None)
        if path is not None and Path(path).is_file():
            read_yaml(path)


def _short(message: str, options: list[str], prog: str) -> str:
    from mopo_lightning.commands.errors import short_parse_error

    return f"{short_parse_error(message, options)}; see {prog} --help"


def _lightning_options() -> list[str]:
    """The ``--options`` of the LightningCLI (for "did you mean"); [] when they cannot be had."""
    from jsonargparse import capture_parser

    from mopo_lightning.commands.fit import MOPOCLI
    from mopo_lightning.commands.signature import option_names

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return option_names(capture_parser(lambda: MOPOCLI(args=[])))
    except Exception:  # a hint only: never hide the parse error behind another one
        return []


if __name__ == "__main__":
    main()
