"""progress room (see docs/architecture.md)."""
