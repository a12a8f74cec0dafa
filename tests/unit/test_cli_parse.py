"""The command layer in-process (``commands.cli.main([...])``): help, config printing, short parse errors, exit codes.

No command here does any work: each one stops at parsing, at ``--help`` or ``--print_config``, or at a
missing file. The subprocess view (the console script's own exit status) is in ``tests/e2e/test_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mopo_lightning.commands.cli import COMMANDS, ExitCode, exit_code, main
from mopo_lightning.commands.errors import short_parse_error
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.guards import CheckpointError, ConfigError, NonFiniteError

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "conf" / "quickstart.yaml")
HOPPER_SAC = str(REPO / "conf" / "collect" / "hopper_sac.yaml")


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``mopo-lightning ARGS`` in-process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_no_arguments_and_help_print_the_overview_of_every_command(capsys):
    for args in ([], ["--help"]):
        code, out, _ = run(capsys, *args)
        assert code == 0
        assert out.startswith("usage: mopo-lightning COMMAND")
        for command in COMMANDS:
            assert f"  {command.name}  " in out, command.name
        assert len(out.splitlines()) < 25  # an overview, not every option


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_command_has_help(capsys, command):
    code, out, _ = run(capsys, *command.split(), "--help")
    assert code == 0
    assert out.startswith(f"usage: mopo-lightning {command}")
    assert "--config" in out and "--print_config" in out


def test_fit_typo_is_one_line_naming_the_key(capsys):
    code, _, err = run(capsys, "fit", "--config", QUICKSTART, "--data.pathh", "x.hdf5")
    assert code == ExitCode.USAGE == 2
    expected = ("mopo-lightning fit: error: unknown option --data.pathh (did you mean --data.path?); "
                "see mopo-lightning fit --help")
    assert error_lines(err) == [expected]


def test_fit_bad_type_names_key_value_and_type(capsys):
    code, _, err = run(capsys, "fit", "--config", QUICKSTART, "--trainer.max_epochs", "abc")
    assert code == 2 and len(error_lines(err)) == 1
    assert "invalid value 'abc' for --trainer.max_epochs (expected int or null)" in err


def test_collect_typo_on_the_command_line_and_in_a_config_file(capsys, tmp_path):
    code, _, err = run(capsys, "collect", "--task", "hopper", "--steps", "10", "--path", "x.hdf5", "--stepz", "5")
    assert code == 2
    expected = ("mopo-lightning collect: error: unknown option --stepz (did you mean --steps?); "
                "see mopo-lightning collect --help")
    assert error_lines(err) == [expected]
    config = tmp_path / "c.yaml"
    config.write_text("task: hopper\nsteps: 10\npath: x.hdf5\nsac:\n  start_stepz: 5\n")
    code, _, err = run(capsys, "collect", "--config", str(config))
    assert code == 2 and len(error_lines(err)) == 1
    assert "unknown key sac.start_stepz in the configuration (did you mean sac.start_steps?)" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--steps", "0"], "invalid value '0' for --steps (expected PositiveInt, v>0)"),
        (["--steps", "10", "--policy", "rand"], "invalid value 'rand' for --policy (expected one of 'random'"),
        ([], "missing required option --steps"),
    ],
)
def test_collect_bad_values_are_one_line(capsys, args, expected):
    code, _, err = run(capsys, "collect", "--task", "hopper", "--path", "x.hdf5", *args)
    assert code == 2 and len(error_lines(err)) == 1 and expected in err, err


def test_collect_unknown_task_is_a_config_error(capsys, tmp_path):
    code, _, err = run(capsys, "collect", "--task", "hoper", "--steps", "10", "--path", str(tmp_path / "x.hdf5"))
    assert code == 2
    assert error_lines(err) == [error_lines(err)[0]] and err.startswith("mopo-lightning: error: --task: unknown task")
    assert not (tmp_path / "x.hdf5").exists()


def test_collect_print_config_reads_the_sac_yaml(capsys):
    code, out, _ = run(capsys, "collect", "--config", HOPPER_SAC, "--print_config")
    assert code == 0
    for line in ("task: hopper", "steps: 100000", "policy: sac", "sac:", "  behaviour_reward: env",
                 "  start_steps: 5000", "  batch_size: 256"):
        assert line in out.splitlines(), line


def test_collect_keeps_its_flags_and_builds_the_sac_group():
    from mopo_lightning.collection.online import SACCollectConfig
    from mopo_lightning.commands.collect import collect
    from mopo_lightning.commands.signature import function_parser

    parser = function_parser(collect, "mopo-lightning collect")
    cfg = parser.parse_args(["--config", HOPPER_SAC, "--steps", "50", "--sac.lr", "1e-3", "--quiet", "true"])
    init = parser.instantiate(cfg)
    assert (init.task, init.steps, init.policy, init.quiet) == ("hopper", 50, "sac", True)
    assert init.sac == SACCollectConfig(start_steps=5000, lr=1e-3)
    assert parser.parse_args(["--task", "hopper", "--steps", "5", "--path", "x", "--quiet"]).quiet is True


def test_data_info_on_a_missing_file_is_bad_data(capsys, tmp_path):
    missing = tmp_path / "nope.hdf5"
    code, _, err = run(capsys, "data", "info", str(missing))
    assert code == ExitCode.DATA == 3
    assert error_lines(err) == [f"mopo-lightning: error: {missing}: no such file"]


def test_unknown_commands_suggest_the_right_one(capsys):
    code, _, err = run(capsys, "colect")
    assert code == 2 and error_lines(err) == [
        "mopo-lightning: error: unknown command 'colect' (did you mean collect?); see mopo-lightning --help"]
    code, _, err = run(capsys, "data", "inf", "x.hdf5")
    assert code == 2 and "unknown command 'data inf' (did you mean data info?)" in err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NonFiniteError("nan"), 1),
        (ConfigError("bad"), 2),
        (DatasetError("bad"), 3),
        (FileNotFoundError(2, "No such file or directory", "data/x.hdf5"), 3),
        (FileNotFoundError(2, "No such file or directory", "conf/x.yaml"), 2),
        (CheckpointError("bad"), 4),
        (PermissionError(13, "Permission denied", "/ro/x.hdf5"), 5),
        (OSError(28, "No space left on device"), 5),
        (ValueError("a bug"), None),
    ],
)
def test_exit_code_table(error, code):
    assert exit_code(error) == code


def test_faults_end_with_one_line_and_traceback_on_request(capsys, monkeypatch):
    def fail(args, from_sys_argv=False):
        raise PermissionError(13, "Permission denied", "/ro/run/results.json")

    monkeypatch.setattr("mopo_lightning.commands.cli.run", fail)
    code, _, err = run(capsys, "report", "x")
    assert code == ExitCode.FILESYSTEM == 5
    assert error_lines(err) == ["mopo-lightning: error: [Errno 13] Permission denied: '/ro/run/results.json'"]
    monkeypatch.setenv("MOPO_TRACEBACK", "1")
    with pytest.raises(PermissionError):
        main(["report", "x"])


UNION_ERROR = (
    'Parser key "trainer.max_epochs":\n  Does not validate against any of the Union subtypes\n  Subtypes: '
    "[<class 'int'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class 'int'>\n  Given value type: "
    "<class 'str'>\n  Given value: abc"
)
"""jsonargparse 4.53's words for ``--trainer.max_epochs abc``."""


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (UNION_ERROR, "invalid value 'abc' for --trainer.max_epochs (expected int or null)"),
        ('Parser key "stage":\n  Expected a typing.Literal[\'all\', \'dynamics\']. Got value: foo',
         "invalid value 'foo' for --stage (expected one of 'all', 'dynamics')"),
        ("the following arguments are required: fit.data.task", "missing required option --data.task"),
        ("Call to compute_fn of link '_obs_dim(data.task) --> model.obs_dim' with args (None) failed: x",
         "missing required option --data.task"),
        ("Subcommand 'fit' does not accept option 'dynamics.num_memberz'",
         "unknown key dynamics.num_memberz in the configuration (did you mean dynamics.num_members?)"),
        ("Parser key \"config\": File does not exist: '/tmp/a.yaml'", "config file /tmp/a.yaml does not exist"),
    ],
)
def test_short_parse_error(message, expected):
    options = ["--data.task", "--dynamics.num_members", "--trainer.max_epochs", "--stage"]
    assert short_parse_error(message, options) == expected


@pytest.mark.parametrize("args, expected", [
    (["--steps", "10"], "--path is required with --format d4rl"),
    (["--steps", "10", "--format", "minari"], "give --dataset_id (not --path)"),
    (["--steps", "10", "--format", "minari", "--dataset_id", "local/h/x-v0", "--path", "x.hdf5"], "not --path"),
    (["--steps", "10", "--format", "minari", "--dataset_id", "local/h/x-v0", "--policy", "sac"], "random or falling"),
])
def test_collect_output_format_needs_its_own_target(capsys, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "collect", "--task", "hopper", *args)
    assert code == 2 and len(error_lines(err)) == 1 and expected in err, err
    assert not any(tmp_path.iterdir())  # nothing collected


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(capsys, tmp_path, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: 3\n data: [1\n")  # line 3, column 2: a broken indent
    line = (f"mopo-lightning: error: {bad}:3:2: YAML syntax error: expected <block end>, but found "
            "'<block mapping start>'")
    code, _, err = run(capsys, *command.split(), "--config", str(bad))
    assert code == ExitCode.USAGE and error_lines(err) == [line]
    if command == "sweep":  # the sweep file itself, given as its argument
        code, _, err = run(capsys, "sweep", str(bad))
        assert code == ExitCode.USAGE and error_lines(err) == [line]
