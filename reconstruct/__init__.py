"""`aps reconstruct`: one photo of an object -> a mesh in the photo's frame, with no camera pose
(docs/RECONSTRUCT.md).

One room a job, each importing only those listed before it:
photos (a file -> uint8 (H, W, 3|4): the 50-megapixel limit, JPEG draft decoding, EXIF orientation, grey),
segmentation (the object's mask: an alpha cut-out, or a model of the border's background colour),
framing (crop and scale as the training views were framed; the canonical camera and the output frame),
reconstruction (framed photo -> occupancy field in the output frame -> mesh, and what was used),
preview (the strip photo | mask | network input | mesh), cli (the typer command: files and the loop).

It stands on inference (predictor, extract_mesh, mesh_io), pipeline.cameras (intrinsics, ray casting),
pipeline.schema (the training store's framing), evaluation.render (pictures only) and common; nothing but
the aps command and the tests imports it.
"""
