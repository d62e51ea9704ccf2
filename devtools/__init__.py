"""Tools for development and tests: a local OpenAI-compatible provider double."""
