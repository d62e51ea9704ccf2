"""Shared infrastructure every layer may use: settings, the metadata store, storage paths."""
