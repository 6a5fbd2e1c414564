"""Cache folder, atomic writes, checksums and the .npz dataset cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from metalearn_shared.data import cache
from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.data.preprocess import add_reflections


def _tiny_dataset() -> ImageDataset:
    images = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    classes = (ClassInfo("Greek", "character01"), ClassInfo("Latin", "character02", 90))
    return ImageDataset(images, np.array([0, 0, 1, 1]), classes, "tiny")


def test_cache_dir_follows_metalearn_home(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home"
    assert (tmp_path / "home").is_dir()


def test_cache_dir_default(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir(create=False) == tmp_path / ".cache" / "metalearn"


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with cache.atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # not visible before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_error_keeps_original_and_removes_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError, match="boom"):
        with cache.atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_error_on_new_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with cache.atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_suffix_for_np_savez(tmp_path):
    target = tmp_path / "arrays.npz"
    with cache.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz"
        np.savez(tmp, a=np.arange(3))  # would append .npz to a name without it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz"]
    with np.load(target) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


def test_md5_helpers(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # > one read chunk
    path.write_bytes(data)
    expected = hashlib.md5(data).hexdigest()
    assert cache.md5_file(path, chunk_bytes=4096) == expected
    assert cache.md5_bytes(data) == expected
    assert cache.verify_md5(path, expected.upper()) == expected
    with pytest.raises(cache.ChecksumError) as err:
        cache.verify_md5(path, "0" * 32)
    assert expected in str(err.value) and "0" * 32 in str(err.value)


def test_cache_key_depends_on_every_option():
    base = cache.cache_key("abc", 28, resample="lanczos")
    assert base == cache.cache_key("abc", 28, resample="lanczos")
    others = {
        cache.cache_key("abd", 28, resample="lanczos"),
        cache.cache_key("abc", 20, resample="lanczos"),
        cache.cache_key("abc", None, resample="lanczos"),
        cache.cache_key("abc", 28, resample="box"),
    }
    assert base not in others and len(others) == 4


def test_dataset_cache_roundtrip(tmp_path):
    ds = _tiny_dataset()
    path = cache.cached_dataset_path("tiny", "k1", tmp_path)
    assert path == tmp_path / "datasets" / "tiny-k1.npz"
    assert cache.load_cached_dataset(path) is None  # missing → rebuild
    cache.save_cached_dataset(ds, path)
    back = cache.load_cached_dataset(path)
    assert back is not None
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.classes == ds.classes and back.name == "tiny"
    mirrored = add_reflections(ds)  # the mirrored flag survives the cache too
    cache.save_cached_dataset(mirrored, path)
    back = cache.load_cached_dataset(path)
    assert back is not None and back.classes == mirrored.classes


def test_corrupt_cache_is_ignored_with_a_warning(tmp_path):
    path = Path(tmp_path / "datasets" / "bad.npz")
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.warns(UserWarning, match="rebuilding"):
        assert cache.load_cached_dataset(path) is None
