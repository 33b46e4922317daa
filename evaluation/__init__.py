"""The eval stage: checkpoint + zarr shards -> meshes, metrics tables, pictures (SPEC.md, "Evaluation")."""
