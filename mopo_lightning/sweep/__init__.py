"""A grid of seeds x hyper-parameters of one ``fit`` config, run as trials on Ray Tune (``mopo-lightning sweep``,
whose entry point is ``commands/sweep.py``).

``spec.py`` reads the sweep file into trials (pure, no Ray); ``trial.py`` is the Tune trainable that runs one
trial as an ordinary ``fit`` in a subprocess; ``tuner.py`` starts Ray, runs the Tuner, prints progress and
the summary.
"""
