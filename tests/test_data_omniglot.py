"""Omniglot readers: official small zips, folders, fake archives, download, tfds mock, splits.

Tests that need the real small zips read them from ``$METALEARN_OMNIGLOT_DIR`` (CI points
it at ../shared/data/omniglot) and skip without it; everything else uses fake archives
built here.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalearn_shared.data import (
    OFFICIAL,
    ChecksumError,
    ClassInfo,
    DataError,
    ImageDataset,
    download,
    load_dataset,
    load_omniglot,
    merge_datasets,
    official_split,
    split_by_alphabet,
)

SMALL_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    """One metalearn cache for the whole session, so the small sets are decoded once."""
    return tmp_path_factory.mktemp("metalearn_home")


@pytest.fixture(autouse=True)
def _isolated_home(session_home, monkeypatch):
    monkeypatch.setenv("METALEARN_HOME", str(session_home))


@pytest.fixture(scope="session")
def small_dir() -> Path:
    value = os.environ.get("METALEARN_OMNIGLOT_DIR")
    if not value:
        pytest.skip("METALEARN_OMNIGLOT_DIR not set: point it at a folder holding "
                    f"{' and '.join(SMALL_ZIPS)} (CI uses ../shared/data/omniglot)")
    folder = Path(value)
    missing = [z for z in SMALL_ZIPS if not (folder / z).is_file()]
    if missing:
        pytest.skip(f"METALEARN_OMNIGLOT_DIR={folder} lacks {missing}")
    return folder


@pytest.fixture(scope="session")
def small(small_dir, session_home) -> ImageDataset:
    return load_omniglot("small", cache_dir=session_home, data_dir=small_dir)


def _png(value: int, size: int = 105, mode: str = "1") -> bytes:
    """An official-style PNG: white paper with one black square whose place codes ``value``."""
    paper = np.ones((size, size), dtype=bool)
    r, c = divmod(value % 81, 9)
    paper[10 + r * 9:18 + r * 9, 10 + c * 9:18 + c * 9] = False
    image = Image.fromarray(paper) if mode == "1" else Image.fromarray(paper.astype(np.uint8) * 255)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


FAKE = {  # alphabet -> characters; 4 drawings each
    "Greek": ("character01", "character02", "character03"),
    "Latin": ("character01", "character02"),
}


def _fake_members(top: str = "images_background") -> dict[str, bytes]:
    members, value = {}, 0
    for alphabet, chars in FAKE.items():
        for char in chars:
            for drawer in range(1, 5):
                members[f"{top}/{alphabet}/{char}/{value:04d}_{drawer:02d}.png"] = _png(value)
                value += 1
    return members


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _write_folder(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


# -- the real small sets ---------------------------------------------------------------------
def test_small_sets_merge_to_242_characters(small):
    assert small.num_classes == 242
    assert len(small.alphabets) == 8
    np.testing.assert_array_equal(small.counts, np.full(242, 20))
    assert small.images.shape == (4840, 28, 28) and small.images.dtype == np.uint8
    assert len({(c.alphabet, c.character) for c in small.classes}) == 242
    assert small.images.mean() < 60 and small.images.max() == 255  # stroke-high
    assert "Greek" in small.alphabets and "Tagalog" in small.alphabets


def test_each_small_set_and_overlap(small_dir, session_home):
    one = load_omniglot(small_dir / SMALL_ZIPS[0], cache_dir=session_home)
    two = load_omniglot(small_dir / SMALL_ZIPS[1], cache_dir=session_home)
    assert (one.num_classes, two.num_classes) == (136, 156)
    shared = {c.key for c in one.classes} & {c.key for c in two.classes}
    assert {k.split("/")[0] for k in shared} == {"Greek", "Latin"}
    merged = merge_datasets([one, two], "m")
    assert merged.num_classes == 136 + 156 - len(shared) == 242


def test_zip_and_unzipped_folder_give_identical_arrays(small_dir, session_home, tmp_path):
    with zipfile.ZipFile(small_dir / SMALL_ZIPS[0]) as z:
        z.extractall(tmp_path)
    from_zip = load_omniglot(small_dir / SMALL_ZIPS[0], cache_dir=session_home)
    from_folder = load_omniglot(tmp_path / "images_background_small1", cache=False)
    np.testing.assert_array_equal(from_zip.images, from_folder.images)
    np.testing.assert_array_equal(from_zip.labels, from_folder.labels)
    assert from_zip.classes == from_folder.classes


def test_cache_is_written_and_reused(small, session_home, small_dir):
    cached = sorted(p.name for p in (session_home / "datasets").glob("*.npz"))
    assert any(name.startswith("omniglot-images_background_small1-") for name in cached)
    again = load_omniglot("small", cache_dir=session_home, data_dir=small_dir)
    np.testing.assert_array_equal(again.images, small.images)
    assert again.classes == small.classes


def test_rotations_on_small1(small_dir, session_home):
    ds = load_omniglot("small1", rotations=True, cache_dir=session_home, data_dir=small_dir)
    assert ds.num_classes == 4 * 136
    assert {c.rotation for c in ds.classes} == {0, 90, 180, 270}
    np.testing.assert_array_equal(ds.images[ds.labels == 136 * 2 + 5],
                                  np.rot90(ds.images[ds.labels == 5], 2, axes=(1, 2)))


def test_alphabet_split_of_small_sets(small):
    a, b = split_by_alphabet(small, (6, 2), seed=0)
    assert len(a.alphabets) == 6 and len(b.alphabets) == 2
    assert not set(a.alphabets) & set(b.alphabets)
    assert a.num_classes + b.num_classes == 242
    assert split_by_alphabet(small, (0.75, 0.25), seed=0)[1].alphabets == b.alphabets
    with pytest.raises(ValueError, match="evaluation"):
        official_split(small)  # both small sets come from the background alphabets


def test_load_dataset_finds_the_small_sets_through_the_env_var(small, small_dir, monkeypatch):
    monkeypatch.setenv("METALEARN_OMNIGLOT_DIR", str(small_dir))
    ds = load_dataset("omniglot")  # 28 × 28 from the session cache
    assert ds.num_classes == 242 and ds.name == "omniglot-small"
    np.testing.assert_array_equal(ds.images, small.images)


def test_download_from_file_url(small_dir, tmp_path):
    url = (small_dir / SMALL_ZIPS[0]).resolve().as_uri()
    seen = []
    path = download("small1", cache_dir=tmp_path, url=url, progress=lambda d, t: seen.append(d))
    assert path == tmp_path / "omniglot" / SMALL_ZIPS[0]
    assert path.stat().st_size == (small_dir / SMALL_ZIPS[0]).stat().st_size and seen
    # A verified copy is not fetched again (the URL below does not exist).
    assert download("small1", cache_dir=tmp_path, url="file:///nonexistent.zip") == path


# -- fake archives: layout, errors, download failures ---------------------------------------
def test_fake_zip_and_folder_agree(tmp_path):
    members = _fake_members()
    from_zip = load_omniglot(_write_zip(tmp_path / "fake.zip", members), size=None, cache=False)
    from_dir = load_omniglot(_write_folder(tmp_path / "dir", members), size=None, cache=False)
    bare = {k.split("/", 1)[1]: v for k, v in members.items()}  # no top folder
    from_bare = load_omniglot(_write_folder(tmp_path / "bare", bare), size=None, cache=False)
    for ds in (from_dir, from_bare):
        np.testing.assert_array_equal(ds.images, from_zip.images)
        assert ds.classes == from_zip.classes
    assert from_zip.classes[0] == ClassInfo("Greek", "character01")
    assert from_zip.image_shape == (105, 105) and from_zip.num_classes == 5
    # Stroke-high: the black square of the PNG is 255, the white paper 0.
    assert set(np.unique(from_zip.images[0])) == {0, 255}
    assert (from_zip.images[0] == 255).sum() == 64


def test_folder_with_two_unzipped_sets_deduplicates(tmp_path):
    one = _fake_members("images_background_small1")
    two = {k.replace("images_background_small1", "images_background_small2"): v
           for k, v in one.items() if "/Latin/" in k}
    two["images_background_small2/Tagalog/character01/9999_01.png"] = _png(80)
    ds = load_omniglot(_write_folder(tmp_path / "both", {**one, **two}), size=None, cache=False)
    assert ds.alphabets == ("Greek", "Latin", "Tagalog")
    assert ds.num_classes == 6 and ds.counts.tolist() == [4, 4, 4, 4, 4, 1]


def test_fake_grayscale_pngs_read_like_1bit(tmp_path):
    members = {"A/character01/x_01.png": _png(3, mode="L"), "A/character01/x_02.png": _png(3)}
    ds = load_omniglot(_write_folder(tmp_path / "d", members), size=None, cache=False)
    np.testing.assert_array_equal(ds.images[0], ds.images[1])


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Alphabet/characterNN/\*\.png"):
        load_omniglot(tmp_path / "nope.zip")


def test_unknown_named_set():
    with pytest.raises(ValueError, match="known sets"):
        load_omniglot("smal")


def test_wrong_layout_says_what_is_expected(tmp_path):
    flat = {"Greek/0001_01.png": _png(1)}  # missing the characterNN level
    with pytest.raises(DataError) as err:
        load_omniglot(_write_folder(tmp_path / "flat", flat), cache=False)
    assert "Alphabet/characterNN/*.png" in str(err.value)
    assert "metalearn data download" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no PNG files"):
        load_omniglot(empty)
    not_char = {"top/Greek/glyph01/0001_01.png": _png(1)}
    with pytest.raises(DataError, match="characterNN"):
        load_omniglot(_write_folder(tmp_path / "nc", not_char), cache=False)


def test_truncated_zip_names_the_file(tmp_path):
    good = _write_zip(tmp_path / "good.zip", _fake_members())
    bad = tmp_path / "images_background_small1.zip"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="images_background_small1.zip") as err:
        load_omniglot(bad, cache=False)
    assert "zip" in str(err.value)


def test_corrupt_zip_member_names_the_member(tmp_path):
    members = _fake_members()
    victim = sorted(members)[3]
    path = tmp_path / "crc.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    raw = bytearray(path.read_bytes())
    at = raw.index(members[victim]) + 40  # inside the stored bytes of one member
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        load_omniglot(path, cache=False)
    assert victim in str(err.value)


def test_truncated_png_names_the_file(tmp_path):
    members = _fake_members()
    victim = sorted(members)[5]
    members[victim] = members[victim][: len(members[victim]) // 2]
    root = _write_folder(tmp_path / "d", members)
    with pytest.raises(DataError) as err:
        load_omniglot(root, cache=False)
    assert victim in str(err.value) and "truncated" in str(err.value)


def test_named_set_with_wrong_md5_is_refused(tmp_path):
    fake = _write_zip(tmp_path / SMALL_ZIPS[0], _fake_members())
    with pytest.raises(ChecksumError, match=OFFICIAL["small1"].md5):
        load_omniglot("small1", data_dir=tmp_path, cache=False)
    assert fake.exists()  # a file the user placed is reported, not deleted


def test_checksum_mismatch_deletes_the_partial_download(tmp_path):
    wrong = _write_zip(tmp_path / "wrong.zip", _fake_members())
    cache_root = tmp_path / "cache"
    with pytest.raises(ChecksumError) as err:
        download("small1", cache_dir=cache_root, url=wrong.as_uri())
    message = str(err.value)
    assert OFFICIAL["small1"].md5 in message
    assert hashlib.md5(wrong.read_bytes()).hexdigest() in message
    assert "deleted" in message
    assert list((cache_root / "omniglot").iterdir()) == []  # no partial, no final file


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_http_download_mismatch_and_success(http_root, tmp_path):
    root, base = http_root
    _write_zip(root / SMALL_ZIPS[0], _fake_members())
    cache_root = tmp_path / "cache"
    with pytest.raises(ChecksumError):
        download("small1", cache_dir=cache_root, url=base + SMALL_ZIPS[0])
    assert list((cache_root / "omniglot").iterdir()) == []
    with pytest.raises(ConnectionError, match="cannot download"):
        download("small2", cache_dir=cache_root, url=base + "missing.zip")
    real = os.environ.get("METALEARN_OMNIGLOT_DIR")
    if real and (Path(real) / SMALL_ZIPS[1]).is_file():
        shutil.copy(Path(real) / SMALL_ZIPS[1], root / SMALL_ZIPS[1])  # into tmp, not the repo
        path = download("small2", cache_dir=cache_root, url=base + SMALL_ZIPS[1])
        assert path.name == SMALL_ZIPS[1] and path.is_file()


def test_unknown_download_name():
    with pytest.raises(ValueError, match="small1"):
        download("images_test.zip")


def test_load_dataset_without_data_explains_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_OMNIGLOT_DIR", raising=False)
    monkeypatch.setenv("METALEARN_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(FileNotFoundError, match="metalearn data download"):
        load_dataset("omniglot")


def test_official_split_by_alphabet_lists():
    classes = (ClassInfo("Greek", "character01"), ClassInfo("Angelic", "character01"),
               ClassInfo("Latin", "character01"))
    ds = ImageDataset(np.zeros((3, 4, 4), np.uint8), np.arange(3), classes, "mini")
    background, evaluation = official_split(ds)
    assert set(background.alphabets) == {"Greek", "Latin"}
    assert evaluation.alphabets == ("Angelic",)


# -- tfds --------------------------------------------------------------------------------------
def test_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets",
                               reason="tensorflow-datasets is not installed")
    with tfds.testing.mock_data(num_examples=24):
        ds = load_omniglot("tfds", size=28, tfds_splits=("train",))
    assert ds.images.shape == (24, 28, 28) and ds.images.dtype == np.uint8
    assert ds.name == "omniglot-tfds"
    assert all(c.character.startswith("character") for c in ds.classes)
    keys = [(c.alphabet, c.character) for c in ds.classes]
    assert keys == sorted(keys) and len(set(keys)) == ds.num_classes
    assert ds.counts.sum() == 24
