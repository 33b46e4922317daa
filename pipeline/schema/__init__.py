"""The zarr layout: the ONE contract between preprocess, train and eval.

Everything that reads or writes a preprocessed dataset goes through this package; the trainer and the
evaluation import it rather than re-declaring array names, dtypes or frames. Its rooms:

    layout.py     the contract's names: constants, the id grammar, quantisers, ObjectMeta / ObjectRecord,
                  what each array is called and told to zarr clients
    checksums.py  the [bytes, crc32c] records of the integrity chain (below)
    read.py       reading a store: Store, open_store, verify_shard
    write.py      writing one: shards, runs.jsonl, index.json, the writer lock, the --out check, the
                  metadata upgrade

This module re-exports their public names, so `from pipeline.schema import open_store` (and Store, the
quantisers, N_SURFACE, INDEX_FILE, ...) is the one import users' scripts need.

Layout (zarr v3, one folder per store; a complete hierarchy, so any zarr client walks from the root to every
array, and xarray opens a shard as a Dataset: README.md, "The store"; docs/PREPROCESS.md)::

    STORE/
      zarr.json          root group; attrs: layout_version, dataset, params, code_version
      index.json         {"status": "complete" | "in_progress", "objects": {object_id: [shard, row]},
                          "metadata": {"zarr.json": [bytes, crc32c], "shards/zarr.json": [bytes, crc32c],
                          "shards/<name>/zarr.json": [bytes, crc32c], ...}, "crc32c": <crc32c of the rest>}
                         written atomically (temporary name + rename) by the preprocess driver
      runs.jsonl         one JSON line per object per run (run_id, object_id, source, status, error, ...)
      writer.lock        held (flock) by the one preprocess run writing the store; the kernel releases it
                         when that process ends, however it ends
      shards/zarr.json   the group of the shards (SHARDS_GROUP_ATTRS), written by init_store
      shards/<name>/     a zarr group holding n objects; its attrs name each row's object ("object_ids", for any
                         client) and list them ("objects": [{object_id,
                         category, split, source, content_hash, extras, draw_seed}, ...]; extras = the source's
                         JSON extras, so eval reloads the exact geometry through
                         pipeline.sources.load_source_mesh) and record every file of the shard
                         ("files": {relative path: [bytes, crc32c]}). Written whole to
                         shards/.tmp-<name>-<uuid> and renamed, so a crash never leaves a half shard.
                         <name> is <run id>-<split>-<k>: only folders of that name are ever deleted.

Integrity: every inner chunk carries a crc32c (zarr's crc32c codec after the compressor) and every chunk is
stored, empty ones included, so an absent chunk is damage, never "fill value". A read first checks that the
array's files exist with the recorded sizes (a deleted or truncated file would otherwise read back as fill
values), then zarr checks the shard index's and the chunk's crc32c; any failure raises DamagedObjectError
naming the object, the array and the file. `verify_shard` compares whole files with their recorded crc32c and
finds the damaged objects (what validation reports and a rerun of preprocess redoes).

The metadata documents decide what a read returns (an array's zarr.json gives its shape: one edited digit and
zarr pads the read with fill values; index.json gives each object's shard and row), so they are verified like
the chunks, in a chain that ends at a document checking itself:

    index.json           its own "crc32c": of the document without that key, as compact JSON with sorted keys
                         (`checksums.index_crc`); checked on every open
      -> "metadata"      size and crc32c of the root zarr.json and of every indexed shard's zarr.json, read
                         whole and checked before they are parsed
        -> "files"       (a shard's attributes) size and crc32c of every other file of the shard: its arrays'
                         zarr.json, checked before an array is opened, and its chunk files
          -> chunks      zarr's crc32c of each chunk and of each shard index, checked on every read

A careless edit anywhere is found. A deliberate one that recomputes every checksum is not (there is no key):
so the object ids and categories read are also checked against the id grammar (`is_object_id`), and every
path built from an id goes through `object_file`, which keeps it in its folder. Stores written before index.json
had "metadata" (no "crc32c" key) still open, with the arrays' zarr.json checked against the shards' "files";
the next `aps preprocess` into them records the rest (it rewrites index.json; nothing is recomputed). A
metadata-only change of an array (attributes, dimension names) goes through `rewrite_array_metadata`, which
re-records the checksums up the chain.

Arrays of a shard (leading axis = object row; every array uses zarr sharding with one shard file per
array and one inner chunk per object, so reading one object decompresses nothing of the others). Each carries its
"dimension_names" (ARRAY_DIMENSIONS) and a long_name; the quantised `points` and `udf` carry CF's scale_factor and
add_offset, which xarray applies on its own. Stores of before those get them from the next `aps preprocess`
(`upgrade_metadata`: metadata only, committed by one rewrite of index.json):

    points        uint16  (n, P, 3)       P = 10000 by default: rows 0..9871 the jittered surface
                                          points (in Morton order of their coordinates, which only
                                          helps compression), 9872..9999 the uniform points (paper
                                          §5.1). Quantised:
                                          p = q * POINT_STEP - POINT_HALF_RANGE in the normalised frame
                                          (unit cube [-0.5, 0.5]^3, longest side 1). Distances are
                                          computed on the quantised points, so `udf` is exact for the
                                          coordinates you read back.
    udf           uint16  (n, P)          unsigned distance to the surface, normalised units, quantised:
                                          d = q * UDF_STEP (step 1.8e-5); read back as float32
    inside        bool    (n, P)          inside the union of the mesh's parts (|generalised winding
                                          number| >= 0.5)
    scale         float64 (n,)            original = points * scale + center
    center        float64 (n, 3)
    images        uint8   (n, V, H, W, 4) RGBA views, transparent background (an object's views are one chunk)
    K             float32 (n, V, 3, 3)    intrinsics in pixels (u = column, v = row)
    Rt            float32 (n, V, 3, 4)    normalised frame -> OpenCV camera (x right, y down, z forward)

Evaluation reference data (shards of the split named in params["reference_splits"], "test" by default):

    ref_surface_points   float32 (n, R, 3)   points on the true surface, normalised frame
    ref_surface_normals  float32 (n, R, 3)   unit normals of those points
    ref_uniform_points   float32 (n, R, 3)   uniform in the reference box [-h, h]^3, h = 0.5 (1 +
                                             params["reference_padding"]): [-0.55, 0.55]^3 by default, OccNet's
                                             box (stores of pipeline-4 and before: [-0.5, 0.5]^3)
    ref_uniform_inside   bool    (n, R)      inside flags of those points (winding number)
"""

from __future__ import annotations

from pipeline.schema.checksums import file_checksum
from pipeline.schema.layout import (
    ARRAY_DIMENSIONS,
    FILES_ATTR,
    ID_GRAMMAR,
    INDEX_CRC_KEY,
    INDEX_FILE,
    LAYOUT_VERSION,
    LOCK_FILE,
    METADATA_KEY,
    N_POINTS,
    N_SURFACE,
    N_UNIFORM,
    OBJECT_FIELDS,
    PENDING_SUFFIX,
    POINT_HALF_RANGE,
    POINT_STEP,
    REFERENCE_ARRAYS,
    RUNS_FILE,
    SHARD_NAME,
    SHARDS_DIR,
    SHARDS_GROUP_ATTRS,
    SHARDS_META_KEY,
    TRAINING_ARRAYS,
    UDF_MAX,
    UDF_STEP,
    DamagedObjectError,
    ObjectMeta,
    ObjectRecord,
    StoreError,
    StoreLockedError,
    dequantize_points,
    dequantize_udf,
    describe_array,
    is_category,
    is_id_char,
    is_object_id,
    is_shard_name,
    is_tmp_shard_name,
    object_file,
    quantize_points,
    quantize_udf,
)
from pipeline.schema.read import Store, open_store, read_index, read_shard_attrs, shard_objects, verify_shard
from pipeline.schema.write import (
    append_run_records,
    check_store_folder,
    init_store,
    rewrite_array_metadata,
    upgrade_metadata,
    write_index,
    write_shard,
    writer_lock,
)

__all__ = [
    "ARRAY_DIMENSIONS", "FILES_ATTR", "ID_GRAMMAR", "INDEX_CRC_KEY", "INDEX_FILE", "LAYOUT_VERSION", "LOCK_FILE",
    "METADATA_KEY", "N_POINTS", "N_SURFACE", "N_UNIFORM", "OBJECT_FIELDS", "PENDING_SUFFIX", "POINT_HALF_RANGE",
    "POINT_STEP", "REFERENCE_ARRAYS", "RUNS_FILE", "SHARD_NAME", "SHARDS_DIR", "SHARDS_GROUP_ATTRS", "SHARDS_META_KEY",
    "TRAINING_ARRAYS", "UDF_MAX", "UDF_STEP",
    "DamagedObjectError", "ObjectMeta", "ObjectRecord", "Store", "StoreError", "StoreLockedError",
    "append_run_records", "check_store_folder", "dequantize_points", "dequantize_udf", "describe_array",
    "file_checksum", "init_store", "is_category", "is_id_char", "is_object_id", "is_shard_name", "is_tmp_shard_name",
    "object_file", "open_store", "quantize_points", "quantize_udf", "read_index", "read_shard_attrs",
    "rewrite_array_metadata", "shard_objects", "upgrade_metadata", "verify_shard", "write_index", "write_shard",
    "writer_lock",
]
