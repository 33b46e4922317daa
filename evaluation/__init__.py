"""The eval stage: checkpoint + zarr shards -> meshes, metrics tables, pictures (docs/METHOD.md, "Evaluation")."""
