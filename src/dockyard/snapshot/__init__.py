"""snapshot room (see docs/architecture.md)."""
