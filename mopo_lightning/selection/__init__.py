"""Offline selection of MOPO's h, lambda and policy (issue 32): value estimates without the real env, FQE
(``fqe.py``) and model-based rollouts in a dynamics ensemble (``model_value.py``), and the DOPE metrics that measure
how well estimates pick among candidates (``metrics.py``); the choice among finished runs (``candidates.py``, the
``select`` command). No real env."""
