"""executor room (see docs/architecture.md)."""
