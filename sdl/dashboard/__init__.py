"""The web dashboard (see docs/dashboard.md)."""
