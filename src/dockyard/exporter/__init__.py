"""exporter room (see docs/architecture.md)."""
