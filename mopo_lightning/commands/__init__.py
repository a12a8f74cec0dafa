"""The ``mopo-lightning`` commands: every command's entry point, and the table that dispatches to them.

``cli.py`` is the console script (the command table, exit codes, one-line faults); ``fit.py`` is ``fit`` (a
LightningCLI that parses and checks, then runs ``recipe.train_mopo``); ``collect.py``, ``data_info.py``,
``report.py`` and ``sweep.py`` are typed functions, their signature the options and their docstring the help.
Each is thin: the work is in the package below (``collection/``, ``data/summary.py``, ``report.py``, ``sweep/``).
``signature.py`` turns a command's function into its parser; ``errors.py`` shortens jsonargparse's parse errors
to one line.
"""
