"""The ``mopo-lightning`` command.

``fit`` and ``validate`` go to LightningCLI (see ``training_cli.py``); the data commands are small
jsonargparse parsers of their own, so that each keeps its ``--help`` and ``--config``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from jsonargparse import ArgumentParser

USAGE = """usage: mopo-lightning COMMAND [options]

commands:
  fit          train MOPO: dynamics ensemble, then SAC on the penalised model (LightningCLI)
  collect      collect a D4RL-format dataset in a real MuJoCo env (--policy sac: online SAC, checkpointed)
  data info    summarise a D4RL-format dataset (add --json for JSON)
  report       the paper's tables (D4RL scores, OOD returns) from run directories

Run `mopo-lightning COMMAND --help` for a command's options.
"""


def _collect_parser() -> ArgumentParser:
    from mopo_lightning.collection.collect import collect
    from mopo_lightning.collection.online import SACCollectConfig

    parser = ArgumentParser(prog="mopo-lightning collect", description=collect.__doc__)
    parser.add_argument("--config", action="config", help="YAML with any of the options below")
    parser.add_function_arguments(collect, as_positional=False)
    # --policy sac: online SAC (data/online.py), whose settings are the `sac` group (conf/collect/*.yaml)
    parser.add_class_arguments(SACCollectConfig, "sac")
    return parser


def _info_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mopo-lightning data info", description="Summarise a D4RL-format dataset.")
    parser.add_argument("file", type=str, help="HDF5 file in the D4RL schema")
    parser.add_argument("--task", type=str, default=None, help="task name (default: the file's metadata)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def collect_main(argv: Sequence[str]) -> None:
    """`mopo-lightning collect`: run a policy in the real env and write a D4RL-schema file."""
    from mopo_lightning.collection.collect import collect

    parser = _collect_parser()
    cfg = parser.parse_args(list(argv))
    kwargs = {k: v for k, v in cfg.as_dict().items() if k not in ("config", "__path__")}
    sac = kwargs.pop("sac")
    if kwargs["policy"] == "sac":
        from mopo_lightning.collection.online import SACCollectConfig, collect_sac

        kwargs.pop("policy")
        path = collect_sac(**kwargs, sac=SACCollectConfig(**sac))
    else:
        path = collect(**kwargs)
    print(f"wrote {path}")


def info_main(argv: Sequence[str]) -> None:
    """`mopo-lightning data info FILE [--task T] [--json]`."""
    from mopo_lightning.data.summary import main_info

    cfg = _info_parser().parse_args(list(argv))
    main_info(cfg.file, task=cfg.task, json=cfg.json)




def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mopo-lightning`` console script.

    Bad data, bad configs and non-finite training numbers end with one clear line, not a traceback
    (``MOPO_TRACEBACK=1`` shows it).
    """
    from mopo_lightning.data.d4rl import DatasetError
    from mopo_lightning.guards import ConfigError, NonFiniteError

    try:
        _main(argv)
    except (DatasetError, ConfigError, NonFiniteError, FileNotFoundError) as error:
        if os.environ.get("MOPO_TRACEBACK"):
            raise
        print(f"mopo-lightning: error: {error}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, NonFiniteError) else 2) from None


def _main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if sys.platform.startswith("linux"):
        # Off-screen rendering (evaluation videos) on headless machines; gymnasium would try GLFW first.
        os.environ.setdefault("MUJOCO_GL", "egl")
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command in ("fit", "validate"):
        from mopo_lightning.training_cli import main as lightning_main

        lightning_main(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    elif command == "collect":
        collect_main(rest)
    elif command == "data":
        if not rest or rest[0] != "info":
            raise SystemExit("usage: mopo-lightning data info FILE [--task T] [--json]")
        info_main(rest[1:])
    elif command == "report":
        from mopo_lightning.report import main as report_main

        report_main(rest)
    else:
        raise SystemExit(f"mopo-lightning: unknown command {command!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
