"""The engine: validation, the augmenter chain every path shares, the Ray Data batch plan and the in-process engine."""
