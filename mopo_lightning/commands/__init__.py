"""The ``mopo-lightning`` commands other than ``fit``, one typed function each (see ``cli.py``).

``signature.py`` turns a command's function into its parser (options from the signature, help from
the docstring); ``errors.py`` shortens jsonargparse's parse errors to one line.
"""
