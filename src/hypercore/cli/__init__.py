"""The `hypercore` command."""
