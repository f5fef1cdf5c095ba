"""sdl, a self-driving-lab orchestration daemon. Its layout: docs/decisions/0007-package-layout.md."""
