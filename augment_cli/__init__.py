"""The `augment` command line."""
