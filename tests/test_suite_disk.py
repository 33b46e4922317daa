"""The suite's own footprint: a CI machine's disk is shared with its virtualenv, stores and checkpoints."""


def test_a_passed_tests_folder_is_deleted_when_it_ends(request):
    # without it every trained run folder (~130 MB) stayed until the session ended: 11 GB, a full CI disk
    assert request.config.getini("tmp_path_retention_policy") == "failed"


def test_a_module_folder_is_fresh_and_empty(module_tmp):
    # module_tmp deletes its folders at module teardown (measured: the whole suite peaks at the figure in the commit)
    folder = module_tmp("probe")
    assert folder.is_dir() and not any(folder.iterdir())
