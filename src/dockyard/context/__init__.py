"""context room (see docs/architecture.md)."""
