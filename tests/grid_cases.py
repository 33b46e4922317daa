"""The --resolution cases that every mesh-extracting command refuses alike (inference.extract_mesh.check_grid)."""

RESOLUTION_MESSAGE = "--resolution must be an integer in [8, 1024] (grid cells per axis; 1024 takes ~13 GB), got {}"
RESOLUTION_CASES = [(["--resolution", "0"], RESOLUTION_MESSAGE.format(0)),
                    (["--resolution", "-5"], RESOLUTION_MESSAGE.format(-5)),
                    (["--resolution", "3000", "--coarse", "0"], RESOLUTION_MESSAGE.format(3000))]
RESOLUTION_IDS = ["resolution-0", "resolution-negative", "resolution-3000-dense"]
