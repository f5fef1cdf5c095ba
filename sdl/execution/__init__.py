"""Running one experiment on devices, the unit of work of `sdl run` and of the lab service's workers: the
experiment runner (`sdl.execution.experiment`), the instruments a process holds (`sdl.execution.instruments`),
bringing up a campaign's lab (`sdl.execution.bringup`), turning documents into measurements
(`sdl.execution.extract`), telling a fault from a bad recipe (`sdl.execution.faults`), where a result came
from (`sdl.execution.provenance`), and the few things bluesky's public API lacks (`sdl.execution.engine`)."""
