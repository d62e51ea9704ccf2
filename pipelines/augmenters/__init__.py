"""Augmenters: one small module each, registered with `@register` (see pipelines.augmenters.registry)."""
