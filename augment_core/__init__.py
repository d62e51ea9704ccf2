"""Shared infrastructure every layer may use: settings, the metadata store, storage paths, events,
the result cache, the rate-limit logic, review tables; it imports nothing of ours."""
