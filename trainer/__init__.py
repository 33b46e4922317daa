"""The train stage: zarr shards -> checkpoints (docs/METHOD.md, "The networks", "The label v(d, s)")."""
