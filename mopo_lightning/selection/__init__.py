"""Offline selection of MOPO's h, lambda and policy (issue 32): FQE estimates (``fqe.py``) and the DOPE
metrics that measure how well estimates pick among candidates (``metrics.py``). Pure library: no Lightning, no
real env."""
