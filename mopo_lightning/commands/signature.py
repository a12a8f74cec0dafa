"""A command's parser from its function's typed signature, and the call of the function with what it parsed.

A command is a plain function. Its parameters are the options (``--name``; a required parameter that is
not keyword-only is positional), jsonargparse checks their types, and the ``Args:`` section of its
docstring is the ``--help`` text; a dataclass parameter is a group (``--sac.lr``, or a ``sac:`` section
in YAML). Every command takes ``--config FILE`` and ``--print_config``.

Two conventions on top of jsonargparse's, kept from the hand-written parsers these replace:

- a ``bool`` parameter that defaults to False is a switch: ``--json`` (also ``--json true|false`` and
  ``--no_json``) instead of jsonargparse's ``--json true``;
- a required positional ``list[str]`` takes one or more words (``report RUN_DIR...``) instead of one
  JSON list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, get_args, get_origin, get_type_hints

from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

CONFIG_HELP = "YAML file with any of the options below; options after it override it (may be repeated)"


def _docs(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description and the per-parameter help of a Google-style docstring."""
    from docstring_parser import parse

    doc = parse(inspect.getdoc(function) or "")
    text = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)
    return text, {p.arg_name: p.description or "" for p in doc.params}


def function_parser(function: Callable[..., Any], prog: str) -> ArgumentParser:
    """The parser of ``function``'s parameters; it raises ``ArgumentError`` instead of exiting on a bad argument."""
    description, docs = _docs(function)
    hints = get_type_hints(function)
    switches, words = [], []
    for name, param in inspect.signature(function).parameters.items():
        hint = hints.get(name)
        if hint is bool and param.default is False:
            switches.append(name)
        elif (get_origin(hint) is list and param.default is param.empty
              and param.kind is param.POSITIONAL_OR_KEYWORD):
            words.append(name)
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help=CONFIG_HELP)
    parser.add_function_arguments(function, as_group=False, as_positional=True, skip={*switches, *words})
    for name in words:
        (item,) = get_args(hints[name]) or (str,)
        parser.add_argument(name, nargs="+", type=item, help=docs.get(name))
    for name in switches:
        parser.add_argument(f"--{name}", action=ActionYesNo, nargs="?", default=False, help=docs.get(name))
    return parser


def run_function(function: Callable[..., Any], parser: ArgumentParser, argv: Sequence[str]) -> Any:
    """Parse ``argv`` with ``function``'s parser and call ``function`` with the result (dataclasses built)."""
    init = parser.instantiate(parser.parse_args(list(argv)))
    names = inspect.signature(function).parameters
    return function(**{key: value for key, value in vars(init).items() if key in names})


def option_names(parser: ArgumentParser) -> list[str]:
    """Every ``--option`` of a parser (nested ones included), for "did you mean" hints: the keys of its
    defaults, which jsonargparse lists in full (``get_defaults``) where argparse keeps its actions private."""
    # Namespace.keys() lists nested keys dotted ("sac.lr"); a Namespace itself is not iterable
    return [f"--{key}" for key in parser.get_defaults(skip_validation=True).keys()]  # noqa: SIM118
