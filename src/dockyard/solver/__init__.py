"""solver room (see docs/architecture.md)."""
