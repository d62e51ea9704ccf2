"""User-facing operations shared by the CLI and the API: preview, import, diff, promote, review actions."""
