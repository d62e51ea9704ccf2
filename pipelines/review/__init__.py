"""Review: which values go to people (policy), and what people decided (decisions)."""
