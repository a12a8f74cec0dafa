"""jsonargparse's parse errors in one line: the offending key or value, and the fix where one is known.

jsonargparse (4.x) words its errors as below; anything else keeps its first line.

- ``unrecognized arguments: --data.pathh x`` -> ``unknown option --data.pathh (did you mean --data.path?)``
- ``Subcommand 'fit' does not accept option 'data.pathh'`` (a key in a YAML file) -> ``unknown key data.pathh``
- ``Parser key "steps": Expected a <class 'int'>. Got value: x`` -> ``invalid value 'x' for --steps (expected int)``
- a value outside a ``Literal`` -> ``invalid value 'llvv' for --mopo.penalty_kind (expected one of 'aleatoric', ...,
  'loo_kl'; did you mean llv?)``
- ``the following arguments are required: fit.data.task`` -> ``missing required option --data.task``
- ``Parser key "config": File does not exist: 'a.yaml'`` -> ``config file a.yaml does not exist``
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

SUBCOMMAND_PREFIXES = ("fit.", "validate.")
"""Keys of LightningCLI's subcommand parsers carry the subcommand's name; the user never types it."""


def _key(key: str) -> str:
    for prefix in SUBCOMMAND_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _type_name(text: str) -> str:
    """``<class 'int'>`` -> int, ``<class 'NoneType'>`` -> null, module paths dropped."""
    text = text.strip()
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text)
    if literal:
        return f"one of {literal.group(1)}"
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)
    return "null" if text == "NoneType" else text


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [p for p in (*parts, text[start:]) if p.strip()]


def _bad_value(key: str, details: str) -> str:
    """One line for ``Parser key "KEY": DETAILS`` (a value of the wrong type or out of range)."""
    if key == "config":
        missing = re.search(r"File does not exist: '?([^'\n]+)'?", details)
        if missing:
            return f"config file {missing.group(1)} does not exist"
        first = next((line.strip() for line in details.splitlines() if line.strip()), details)
        return f"cannot read the config file: {first}"
    value = re.findall(r"(?:Given|Got) value: (.*)", details)
    restriction = re.search(r"Not of type (\w+): (.*) does not conform to restriction (.*)", details)
    not_of_type = re.search(r"Not of type (\w+): (.*)", details)
    subtypes = re.search(r"Subtypes: \[(.*)\]", details)
    expected = re.search(r"Expected an? ((?:typing\.Literal\[.*?\])|<class '[\w.]+'>|[\w.\[\], ]+?)(?:\.|$)", details,
                         re.MULTILINE)
    option = f"--{_key(key)}"
    if restriction:
        return f"invalid value {restriction.group(2)!r} for {option} (expected {restriction.group(1)}, " \
               f"{restriction.group(3).strip()})"
    if not_of_type:
        return f"invalid value for {option} (expected {not_of_type.group(1)}): {not_of_type.group(2).strip()}"
    if subtypes:
        wanted = " or ".join(_type_name(t) for t in _split_top_level(subtypes.group(1)))
    elif expected:
        wanted = _type_name(expected.group(1))
    else:
        first = next((line.strip(" -") for line in details.splitlines() if line.strip(" -")), details)
        return f"invalid value for {option}: {first}"
    got = f" {value[-1].strip()!r}" if value else ""
    choices = re.findall(r"'([^']*)'", expected.group(1)) if expected and "Literal[" in expected.group(1) else []
    close = difflib.get_close_matches(value[-1].strip(), choices, n=1, cutoff=0.6) if value and choices else []
    return f"invalid value{got} for {option} (expected {wanted}{f'; did you mean {close[0]}?' if close else ''})"


def short_parse_error(message: str, options: Sequence[str]) -> str:
    """One line for a jsonargparse error ``message``; ``options`` are the parser's ``--options``."""
    keys = [o[2:] for o in options]
    found = re.match(r"unrecognized arguments: (.*)", message)
    if found:
        words = found.group(1).split()
        flag = next((w.split("=", 1)[0] for w in words if w.startswith("-")), None)
        if flag is None:
            return f"unexpected argument {words[0]!r}"
        return f"unknown option {flag}{_did_you_mean(flag, options)}"
    found = re.match(r"(?:Subcommand '[\w-]+'|Group '([\w.]+)') does not accept option '([\w.]+)'"
                     r"|Option '([\w.]+)' is not accepted", message)
    if found:
        group, sub, whole = found.groups()
        key = _key(whole or (f"{group}.{sub}" if group else sub))
        return f"unknown key {key} in the configuration{_did_you_mean(key, keys)}"
    found = re.match(r'Parser key "([\w.]+)":\s*(.*)', message, re.DOTALL)
    if found:
        return _bad_value(*found.groups())
    found = re.match(r"the following arguments are required: (.*)", message)
    if found:
        names = [_key(k.strip()) for k in found.group(1).split(",")]
        named = [f"--{n}" if f"--{n}" in options else n for n in names]
        return f"missing required {'option' if named[0].startswith('--') else 'argument'} {', '.join(named)}"
    found = re.match(r"Call to compute_fn of link '\w+\(([\w.]+)\) --> [\w.]+' with args \((.*?)\) failed: (.*)",
                     message, re.DOTALL)
    if found:  # a link from an option (data.task -> model.obs_dim) whose value the link cannot use
        source, value, reason = found.groups()
        if value == "None":
            return f"missing required option --{_key(source)}"
        return f"invalid value for --{_key(source)}: {reason.strip().strip(chr(34))}"
    first = next((line.strip() for line in message.splitlines() if line.strip()), message)
    return first
