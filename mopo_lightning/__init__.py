"""mopo-lightning: MOPO (Yu et al. 2020) on Lightning, TorchRL and TensorDict."""

__version__ = "0.1.0"
