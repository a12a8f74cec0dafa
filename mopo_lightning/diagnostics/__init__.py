"""Diagnostics of MOPO's premise: the penalty against the model's real error where the policy goes."""
