"""Inference: a checkpoint and one view -> an occupancy field -> a mesh file.

predictor: load a checkpoint, query the field of one image and its camera; extract_mesh: marching cubes at
0.5 over a dense or coarse-to-fine grid; mesh_io: mesh files. The evaluation stage and `aps reconstruct` both
stand on it; it stands on the trainer (the network, the view preparation) and nothing above.
"""
