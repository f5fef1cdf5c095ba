"""`python -m sdl` is the `sdl` command."""

import sys

from sdl.cli import main

sys.exit(main())
