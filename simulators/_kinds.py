"""Imports every built-in simulator so that it registers its kind."""

import simulators.cavro
import simulators.ika
import simulators.ne1000
import simulators.ocean
import simulators.ur  # noqa: F401
