"""The model store: layout, names, versions, config.json and its TorchServe aliases, refusals."""

from __future__ import annotations

import json
import os

import pytest

from modelkit.edge_runtime.serving.errors import ModelStoreError
from modelkit.edge_runtime.serving.store import ModelConfig, apply_config, find_model, list_names


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_torchserve_aliases_mean_the_same_settings():
    ours = apply_config(ModelConfig(), {"max_batch_size": 8, "max_queue_delay_us": 2500, "workers": 3,
                                        "timeout_s": 4, "max_queue_size": 9}, "x")
    theirs = apply_config(ModelConfig(), {"batch_size": 8, "max_batch_delay": 2.5, "min_worker": 3,
                                          "response_timeout": 4, "job_queue_size": 9}, "x")
    assert ours == theirs == ModelConfig(8, 2500, 3, 4.0, 9)


@pytest.mark.parametrize("values, words", [
    ({"batchsize": 4}, "unknown key 'batchsize'"),
    ({"max_batch_size": 0}, "out of range"),
    ({"workers": 1000}, "out of range"),
    ({"timeout_s": "soon"}, "not a number"),
    ({"max_batch_size": True}, "not a number"),
    ({"max_batch_size": None}, "not a number"),
])
def test_bad_config_values_are_refused_with_the_key(values, words):
    with pytest.raises(ModelStoreError, match=words):
        apply_config(ModelConfig(), values, "m/config.json")


def test_versions_sort_numerically_and_config_applies_to_all(tmp_path):
    for version in ("1", "2", "10"):
        _touch(f"{tmp_path}/m/{version}/model.mkb")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"batch_size": 4}))
    entries = find_model(str(tmp_path), "m", ModelConfig())
    assert [e.version for e in entries] == ["1", "2", "10"]
    assert {e.config.max_batch_size for e in entries} == {4}


def test_flat_file_is_version_1_and_names_list_both_layouts(tmp_path):
    _touch(f"{tmp_path}/a.mkb")
    _touch(f"{tmp_path}/b/3/model.mkb")
    _touch(f"{tmp_path}/notes.txt")
    _touch(f"{tmp_path}/.hidden.mkb")
    assert list_names(str(tmp_path)) == ["a", "b"]
    (entry,) = find_model(str(tmp_path), "a.mkb", ModelConfig())
    assert (entry.name, entry.version, entry.path) == ("a", "1", os.path.realpath(f"{tmp_path}/a.mkb"))


@pytest.mark.parametrize("config, words", [
    ("{not json", "cannot be read"),
    ("[1, 2]", "must hold a JSON object"),
    (json.dumps({"handler": "../../evil.py"}), "must be a file name in the model's folder"),
    (json.dumps({"handler": "/etc/passwd"}), "must be a file name in the model's folder"),
])
def test_bad_config_files_are_refused(tmp_path, config, words):
    _touch(f"{tmp_path}/m/1/model.mkb")
    (tmp_path / "m" / "config.json").write_text(config)
    with pytest.raises(ModelStoreError, match=words):
        find_model(str(tmp_path), "m", ModelConfig())


def test_symlinks_inside_the_store_are_fine_outside_are_not(tmp_path):
    store, outside = tmp_path / "store", tmp_path / "outside"
    _touch(f"{store}/real/1/model.mkb")
    _touch(f"{outside}/x.mkb")
    os.symlink(f"{store}/real/1/model.mkb", f"{store}/alias.mkb")
    os.symlink(outside, f"{store}/dir")
    assert find_model(str(store), "alias", ModelConfig())[0].path == os.path.realpath(f"{store}/real/1/model.mkb")
    with pytest.raises(ModelStoreError, match="leads outside the model store"):
        find_model(str(store), "dir", ModelConfig())


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/abs", "", "a" * 200, "x..y", "-flag", "ünï"])
def test_names_that_could_escape_are_refused(tmp_path, name):
    with pytest.raises(ModelStoreError, match="is not allowed"):
        find_model(str(tmp_path), name, ModelConfig())


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_model_paths_that_are_not_regular_files_are_refused(tmp_path, kind):
    """Regression: a FIFO named like a model blocked registration forever in open()."""
    for path in (tmp_path / "flat.mkb", tmp_path / "nested" / "1" / "model.mkb"):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path) if kind == "fifo" else path.mkdir()
        with pytest.raises(ModelStoreError, match="is not a regular file"):
            find_model(str(tmp_path), path.relative_to(tmp_path).parts[0].removesuffix(".mkb"),
                       ModelConfig())
