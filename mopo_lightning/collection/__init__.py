"""Behaviour-data collection in the real MuJoCo envs: scripted policies and online SAC (above ``policy/``)."""
