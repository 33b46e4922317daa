"""R2N2's cameras, derived from rendering_metadata.txt for the normalised frame, put every surface point on the
object's pixels in R2N2's own images (docs/METHOD.md, "3D-R2N2 renderings: the camera").

The fixture's images were rendered from the raw v1-frame mesh with docs/METHOD.md's camera written out in
tests/fixtures (not with the reader's code); the store's K and Rt were derived by the reader from the metadata
file alone, for the normalised frame (v1: normalised = (v1 - center) / scale; v2: through the v1 model).

Tolerances, stated: a point counts as on the silhouette if it falls in the silhouette dilated by one pixel
(a boundary pixel whose centre ray misses the surface is empty although part of the surface covers it);
>= 99% of the points of every view must. The silhouette's bounding box and the projected points' bounding
box agree within 2 px, on views where every point lands inside the image (R2N2's closest cameras cut the
corners of a long part).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from pipeline import schema
from pipeline.cameras import project
from pipeline.manifest import Manifest
from pipeline.runner import run_preprocess
from pipeline.stages.load import load_mesh
from pipeline.stages.sample_points import sample_surface
from tests.pipeline.sources.conftest import SMALL

SIZE = 137


@pytest.fixture(scope="module", params=["v1", "v2"])
def r2n2_store(request, shapenet_copy, module_tmp) -> schema.Store:
    source = {"type": f"shapenet_{request.param}", "renderings": str(shapenet_copy.renderings),
              "categories": ["bench", "car", "chair"]}
    if request.param == "v1":
        source["root"] = str(shapenet_copy.v1)
    else:
        source.update(root=str(shapenet_copy.v2), v1_root=str(shapenet_copy.v1))
    out = module_tmp(f"r2n2-{request.param}")
    m = Manifest(name="r2n2", sources=[source], params={**SMALL, "reference_splits": []}, base_dir=out)
    summary = run_preprocess(m, out / "store", scheduler="serial")
    assert summary.done == 4 and not summary.failed
    return schema.open_store(out / "store")


def normalised_surface(store: schema.Store, object_id: str, n: int = 20000) -> np.ndarray:
    """Points on the true surface of an object in its normalised frame, from its source mesh and stored transform."""
    vertices, faces = load_mesh(store.info(object_id)["source"])
    d = store.load(object_id, ["scale", "center"])
    points, _ = sample_surface((vertices - d["center"]) / d["scale"], faces, n, np.random.default_rng(1))
    return points


def silhouette_checks(points: np.ndarray, images: np.ndarray, K: np.ndarray, Rt: np.ndarray):
    """Per view: (fraction of in-image points on the dilated silhouette, bounding-box difference in px or None)."""
    out = []
    for v in range(len(images)):
        uv = project(points, K[v], Rt[v])
        pix = np.floor(uv).astype(int)
        in_image = ((pix >= 0) & (pix < SIZE)).all(axis=1)
        mask = images[v, :, :, 3] > 0
        dilated = binary_dilation(mask, structure=np.ones((3, 3), bool))
        on = dilated[pix[in_image, 1], pix[in_image, 0]].mean() if in_image.any() else 0.0
        box_diff = None
        if in_image.all():
            rows, cols = np.nonzero(mask)
            sil = np.array([cols.min(), rows.min(), cols.max(), rows.max()])
            proj = np.array([*pix.min(axis=0), *pix.max(axis=0)])
            box_diff = int(np.abs(sil - proj).max())
        out.append((on, box_diff))
    return out


def test_surface_points_land_on_the_r2n2_silhouette(r2n2_store):
    boxes_checked = 0
    for oid in r2n2_store.object_ids:
        d = r2n2_store.load(oid, ["images", "K", "Rt"])
        assert np.allclose(d["K"][:, 0, 0], SIZE * 35 / 32) and np.allclose(d["K"][:, :2, 2], SIZE / 2)
        points = normalised_surface(r2n2_store, oid)
        for v, (on, box_diff) in enumerate(silhouette_checks(points, d["images"], d["K"], d["Rt"])):
            assert on >= 0.99, f"{oid} view {v}: only {on:.3f} of the surface points land on the silhouette"
            if box_diff is not None:
                assert box_diff <= 2, f"{oid} view {v}: bounding boxes differ by {box_diff} px"
                boxes_checked += 1
    assert boxes_checked >= 0.75 * 24 * len(r2n2_store.object_ids)


def test_misreading_the_fifth_number_as_the_fov_is_caught(r2n2_store):
    """The check above can fail: with f from a 25 degree field of view (the classic misreading of the metadata's
    5th number) the projected points spill far past the silhouette."""
    oid = r2n2_store.object_ids[0]
    d = r2n2_store.load(oid, ["images", "K", "Rt"])
    wrong = d["K"].copy()
    wrong[:, 0, 0] = wrong[:, 1, 1] = (SIZE / 2) / np.tan(np.radians(25 / 2))
    checks = silhouette_checks(normalised_surface(r2n2_store, oid), d["images"], wrong, d["Rt"])
    assert min(on for on, _ in checks) < 0.9
