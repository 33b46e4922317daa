"""A mesh whose coordinates overflow the arithmetic fails alone with a one-line reason and no numpy warnings;
a large but computable one is processed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import trimesh

from pipeline.config import PreprocessConfig
from pipeline.process import ObjectFailure, process_object_safe
from pipeline.schema import ObjectMeta
from pipeline.stages.normalize import normalize
from pipeline.stages.render_views import ViewSampling

SMALL = PreprocessConfig(n_surface=200, n_uniform=20, n_reference=0, reference_splits=(),
                         views=ViewSampling(n_views=1, image_size=16))


def box_file(tmp_path, name: str, size: float, **export) -> str:
    box = trimesh.creation.box()
    box.vertices = box.vertices * size
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing 1e300 to a file is not what is tested
        box.export(path, **export)
    return str(path)


def process_recording_warnings(path: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = process_object_safe(ObjectMeta("parts-box", "parts", "train", path, content_hash="0" * 32), SMALL)
    return result, [f"{w.category.__name__}: {w.message}" for w in caught]


@pytest.mark.parametrize("name, export", [("huge.obj", {}), ("huge.stl", {"file_type": "stl_ascii"})])
def test_huge_coordinates_fail_the_object_with_one_line_and_no_warnings(tmp_path, name, export):
    path = box_file(tmp_path, name, 2e300, **export)
    result, caught = process_recording_warnings(path)
    assert isinstance(result, ObjectFailure)
    assert result.error == (f"MeshError: {path}: coordinates up to 1e+300 file units, beyond the 1e+30 that can be "
                            "computed with (a unit or export error?)")
    assert caught == []


def test_binary_stl_overflowing_float32_is_named_non_finite(tmp_path):
    path = box_file(tmp_path, "huge_binary.stl", 2e300)  # binary STL: float32, 1e300 is inf (36 corners)
    result, caught = process_recording_warnings(path)
    assert isinstance(result, ObjectFailure) and result.error == f"MeshError: {path}: 36 vertices are NaN or infinite"
    assert caught == []


def test_large_but_computable_coordinates_are_processed(tmp_path):
    path = box_file(tmp_path, "large.obj", 2e29)
    result, caught = process_recording_warnings(path)
    assert not isinstance(result, ObjectFailure), result.error
    assert result.arrays["scale"] == pytest.approx(2e29) and caught == []


def test_normalize_refuses_an_extent_that_overflows_without_warnings():
    vertices = np.array([[-1.5e308, 0, 0], [1.5e308, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = np.array([[0, 1, 2], [0, 1, 3]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"^the bounding box \[-1.5e\+308, 1.5e\+308\], \[0, 1\], \[0, 1\] has no "
                                             r"finite positive size \(non-finite or overflowing coordinates\)$"):
            normalize(vertices, faces)
    assert caught == []
    unit, scale, center = normalize(vertices / 1.5e308, faces)  # the same shape at a computable size is fine
    assert scale == pytest.approx(2.0) and np.abs(unit).max() <= 0.5
