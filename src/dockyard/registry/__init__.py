"""registry room (see docs/architecture.md)."""
