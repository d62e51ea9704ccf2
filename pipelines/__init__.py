"""The workflow spec, sources, validation, augmenters, sinks and the Ray Data plan."""
