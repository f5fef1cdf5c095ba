"""Helpers for testing against the lab service (and for integrators testing their campaigns on it):
`LabServiceProcess` runs `sdl daemon` as a subprocess; `wait_for` polls a condition with a deadline."""

from sdl.daemon.launch import LabServiceProcess, alive, descendants, end, wait_for

__all__ = ["LabServiceProcess", "alive", "descendants", "end", "wait_for"]
