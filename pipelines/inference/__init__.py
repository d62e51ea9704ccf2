"""Calling providers: templates, the client with retries and deadlines, permits, budget, and the run
context a step gets (the base of inference augmenters is pipelines.augmenters.inference_base)."""
