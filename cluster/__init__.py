"""Cluster operations: the local head node (KubeRay manifests and monitoring files live beside it)."""
