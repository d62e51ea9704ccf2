"""The engine, as layered subpackages (each imports only those below it): spec, io, inference,
augmenters, review, engine, workflows, operations — see docs/architecture.md."""
