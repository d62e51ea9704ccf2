"""The spec layer: pure pydantic models of a workflow and its providers, and spec errors."""
