"""Stateful Ray actors: the run coordinator (later: provider limiters, stream consumers)."""
