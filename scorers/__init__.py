"""The scorer registry and every scorer."""
