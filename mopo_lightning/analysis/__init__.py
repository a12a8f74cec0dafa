"""Studies over many runs: honest statistics (``statistics.py``, through rliable) and figures (``figures.py``)."""
