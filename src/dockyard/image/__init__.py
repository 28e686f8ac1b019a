"""image room (see docs/architecture.md)."""
