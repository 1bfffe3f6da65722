"""The `wisp` command line."""
