"""Gradio panels as Blocks builders: read models in, no Serve code."""
