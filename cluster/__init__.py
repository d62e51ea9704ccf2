"""Cluster operations: the local head node behind `augment cluster up`."""
