"""Workflow files: loading and checking a spec, and the folder of workflows the API serves."""
