"""Fuzzing of every reader of untrusted bytes: Omniglot zips and folders, PNGs, the one-shot
runs format and canonical checkpoints. Truncated, bit-flipped, re-typed or absurdly sized
inputs may only raise the documented exceptions (:class:`DataError` / ``ValueError``,
``FileNotFoundError``) — never another exception, a crash or a hang.

Examples are few (CI runs them derandomised, ``tests/conftest.py``), each input tiny.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metalearn_shared.data import DataError, load_omniglot, read_runs  # noqa: E402
from metalearn_shared.data.preprocess import decode_png  # noqa: E402
from metalearn_shared.weights import save_canonical  # noqa: E402

DOCUMENTED = (ValueError, FileNotFoundError)  # DataError, ChecksumError, WeightMismatchError are ValueErrors
FUZZ = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _png(seed: int, side: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.random((side, side)) > 0.5).save(buf, format="PNG")  # 1-bit, as Omniglot
    return buf.getvalue()


@st.composite
def damaged(draw, blob: bytes) -> bytes:
    """``blob`` truncated, bit-flipped in a few places, or with a slice overwritten."""
    data = bytearray(blob)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    i = draw(st.integers(0, len(data) - 1))
    junk = draw(st.binary(min_size=1, max_size=16))
    data[i:i + len(junk)] = junk
    return bytes(data)


PNG = _png(0)


@FUZZ
@given(damaged(PNG))
def test_png_decoder(data):
    try:
        image = decode_png(data, "fuzz.png")
    except DataError:
        return
    assert image.dtype == np.uint8 and image.ndim == 2


def _omniglot_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for a in ("Alpha", "Beta"):
            for i in range(2):
                z.writestr(f"images_background/{a}/character01/{a}_{i:02d}.png", _png(i))
    return buf.getvalue()


ZIP = _omniglot_zip()


@FUZZ
@given(damaged(ZIP))
def test_omniglot_zip_reader(tmp_path, data):
    path = tmp_path / "images_background.zip"
    path.write_bytes(data)
    try:
        ds = load_omniglot(path, size=8, cache=False)
    except DOCUMENTED:
        return
    assert ds.images.dtype == np.uint8 and len(ds.images) == len(ds.labels)


@FUZZ
@given(st.integers(0, 3), damaged(PNG))
def test_omniglot_folder_reader(tmp_path, which, data):
    root = tmp_path / "omni"
    shutil.rmtree(root, ignore_errors=True)
    files = [root / a / "character01" / f"{a}_{i}.png" for a in ("Alpha", "Beta") for i in range(2)]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(PNG)
    files[which].write_bytes(data)
    try:
        load_omniglot(root, size=8, cache=False)
    except DOCUMENTED:
        pass


def _runs(root: Path) -> None:
    run = root / "run01"
    for sub in ("training", "test"):
        (run / sub).mkdir(parents=True)
    lines = []
    for i in range(2):
        (run / "training" / f"class{i + 1:02d}.png").write_bytes(_png(i))
        (run / "test" / f"item{i + 1:02d}.png").write_bytes(_png(i + 5))
        lines.append(f"run01/test/item{i + 1:02d}.png run01/training/class{i + 1:02d}.png")
    (run / "class_labels.txt").write_text("\n".join(lines) + "\n")


@FUZZ
@given(st.sampled_from(["class_labels.txt", "training/class01.png", "test/item02.png"]),
       st.data())
def test_lake_runs_reader(tmp_path, target, data):
    root = tmp_path / "runs"
    shutil.rmtree(root, ignore_errors=True)
    _runs(root)
    path = root / "run01" / target
    blob = path.read_bytes()
    if target.endswith(".txt") and data.draw(st.booleans()):
        path.write_text(data.draw(st.text(max_size=200)), errors="surrogatepass")
    else:
        path.write_bytes(data.draw(damaged(blob)))
    try:
        runs = read_runs(root, size=8)
    except DOCUMENTED:
        return
    assert all(r.train_images.dtype == np.uint8 for r in runs)


def _checkpoint() -> bytes:
    import tempfile

    from metalearn_shared.models import param_spec
    from metalearn_shared.models.protonet import ProtoNetConfig

    config = ProtoNetConfig()
    arrays = {p.name: np.zeros(p.shape, np.float32) for p in param_spec(config)}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.safetensors"
        save_canonical(path, arrays, {"model": "protonet", "config": config.to_dict(), "step": 1})
        return path.read_bytes()


CHECKPOINT = _checkpoint()


def _header_edit(blob: bytes, edit: str) -> bytes:
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    first = next(k for k in header if k != "__metadata__")
    if edit == "dtype":
        header[first]["dtype"] = "I64"
    elif edit == "shape":
        header[first]["shape"] = [3, 2]
    elif edit == "offsets":
        header[first]["data_offsets"] = [0, 10**12]
    elif edit == "metadata":
        header["__metadata__"]["metalearn"] = json.dumps({"model": "protonet"})  # no config
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + blob[8 + n:]


@FUZZ
@given(st.one_of(
    damaged(CHECKPOINT),
    st.sampled_from(["dtype", "shape", "offsets", "metadata"]).map(lambda e: _header_edit(CHECKPOINT, e)),
    st.integers(2**40, 2**64 - 1).map(lambda n: struct.pack("<Q", n) + CHECKPOINT[8:]),
))
def test_checkpoint_loader(tmp_path, data):
    """Loaded into a model of the framework, so a wrong dtype or shape must be refused too."""
    torch = pytest.importorskip("torch")
    from metalearn_torch.checkpoint import load_checkpoint

    path = tmp_path / "c.safetensors"
    path.write_bytes(data)
    try:
        model, _ = load_checkpoint(path)
    except DOCUMENTED:
        return
    assert all(torch.isfinite(p).all() for p in model.parameters())
