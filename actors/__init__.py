"""Ray actors as thin wrappers around plain classes: run coordinators, stream consumers and provider
limiters, and the functions that start, resume, cancel and read runs and streams."""
