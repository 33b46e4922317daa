"""Pure per-object steps of the preprocess stage: mesh in, arrays out, no I/O beyond reading the mesh."""
