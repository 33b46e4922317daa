"""The train stage: zarr shards -> checkpoints (SPEC.md, "The networks", "The label v(d, s)")."""
