"""Modules of ``benchmarks/memory.py`` (run that script; see its docstring).

``procfs`` reads ``/proc``; ``heap`` names what holds memory; ``run`` is one measured
run in a fresh interpreter; ``kill`` the SIGKILLed-owner check; ``figures`` turns two
runs into per-sample figures and targets; ``report`` prints them.
"""
