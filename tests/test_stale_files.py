"""remove_stale_temp_files: what an interrupted save leaves is removed by the next one, and nothing else."""

import os

from saverkit.train.stale_files import remove_stale_temp_files, stale_temp_files

HEX = "0123456789abcdef" * 2


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")


def test_removes_every_kind_of_temporary_of_this_model(tmp_path):
    d = str(tmp_path)
    stale = [
        f"{d}/model-3.index.tempstate123456",
        f"{d}/model-3.data-00000-of-00001.tempstate99",
        f"{d}/model-4.data-00001-of-00002.tempstate1",
        f"{d}/model-3.meta.tmp{HEX}",
        f"{d}/model-3.meta.tmpk2_9zqa1",
        f"{d}/checkpoint.tmp{HEX}",
        f"{d}/model-5_temp_{HEX}/part-00000-of-00002.index",
        f"{d}/model-6_temp/part-00001-of-00002.data-00000-of-00001",
        f"{d}/model.index.tempstate5",
    ]
    for p in stale:
        touch(p)
    removed = remove_stale_temp_files(f"{d}/model-6")
    dirs = [f"{d}/model-5_temp_{HEX}", f"{d}/model-6_temp"]
    assert sorted(removed) == sorted([p for p in stale if "_temp" not in p] + dirs)
    assert os.listdir(d) == []


def test_leaves_checkpoints_other_models_and_lookalikes_alone(tmp_path):
    d = str(tmp_path)
    keep = [
        f"{d}/model-3.index",
        f"{d}/model-3.data-00000-of-00001",
        f"{d}/model-3.meta",
        f"{d}/checkpoint",
        f"{d}/other-3.index.tempstate77",  # another model's in-flight save
        f"{d}/other_temp_{HEX}/part-00000-of-00001.index",
        f"{d}/model-3.index.tempstate",  # not a name saverkit or TF makes
        f"{d}/mymodel-3.index.tempstate1",
        f"{d}/model-3_temporary/x",
    ]
    for p in keep:
        touch(p)
    touch(f"{d}/model-3_temp_{HEX}")  # a *file* with a temp directory's name: not ours
    assert remove_stale_temp_files(f"{d}/model-4") == []
    assert stale_temp_files(f"{d}/model") == []
    assert all(os.path.exists(p) for p in keep)


def test_custom_state_file_name_and_missing_directory(tmp_path):
    d = str(tmp_path)
    touch(f"{d}/latest.tmp{HEX}")
    touch(f"{d}/checkpoint.tmp{HEX}")
    assert remove_stale_temp_files(f"{d}/model", latest_filename="latest") == [f"{d}/latest.tmp{HEX}"]
    assert remove_stale_temp_files(f"{d}/nowhere/model") == []
