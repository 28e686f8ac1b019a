"""layers room (see docs/architecture.md)."""
