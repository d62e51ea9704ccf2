"""Calling providers: templates, the client with retries, permits, budget and the base of inference augmenters."""
