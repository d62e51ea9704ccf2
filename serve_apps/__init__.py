"""Ray Serve applications: the HTTP API, one application per panel, and the shell page."""
