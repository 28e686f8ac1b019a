"""dockerfile room (see docs/architecture.md)."""
