"""A URScript interpreter for the simulated controller: syntax, runtime, the function library."""
