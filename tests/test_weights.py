"""The one converter: layouts, strict errors, and the canonical checkpoint file."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared import weights as W


def _spec():
    return [
        *W.conv2d("emb.conv1", 1, 4, 3),
        *W.batchnorm("emb.bn1", 4),
        *W.dense("emb.fc", 4 * 2 * 3, 5, flatten_chw=(4, 2, 3)),
        *W.dense("head", 5, 2, bias=False),
        *W.lstm_cell("ctrl", 7, 3),
    ]


def _random(spec, seed=0):
    rng = np.random.default_rng(seed)
    return {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in spec}


def test_keras_round_trip_is_bit_identical():
    spec = _spec()
    canon = _random(spec)
    k = W.to_framework(canon, spec, "keras")
    assert k["emb/conv1/kernel"].shape == (3, 3, 1, 4)
    assert k["emb/bn1/moving_variance"].shape == (4,)
    assert k["ctrl/recurrent_kernel"].shape == (3, 12)
    back = W.to_canonical(k, spec, "keras")
    for name in canon:
        np.testing.assert_array_equal(back[name], canon[name])


def test_flatten_dense_permutation_matches_framework_flattens():
    # A conv feature map (C, H, W) flattened torch-style vs Keras-style (H, W, C) must give
    # the same dense output once the kernel is converted.
    (p,) = [s for s in _spec() if s.layout is W.Layout.FLATTEN_DENSE]
    rng = np.random.default_rng(1)
    wt = rng.standard_normal(p.shape)
    fmap_chw = rng.standard_normal((4, 2, 3))
    torch_out = wt @ fmap_chw.reshape(-1)
    keras_kernel = W._to_keras(p, wt)
    keras_out = fmap_chw.transpose(1, 2, 0).reshape(-1) @ keras_kernel
    np.testing.assert_allclose(keras_out, torch_out, rtol=1e-12)


def test_conv_layout_matches_a_real_convolution():
    (p,) = [s for s in _spec() if s.name == "emb.conv1.weight"]
    rng = np.random.default_rng(2)
    w = rng.standard_normal(p.shape)  # (O, I, kh, kw)
    patch = rng.standard_normal((1, 3, 3))  # (I, kh, kw) == one receptive field
    torch_out = np.einsum("oikl,ikl->o", w, patch)
    kk = W._to_keras(p, w)  # (kh, kw, I, O)
    keras_out = np.einsum("klio,kli->o", kk, patch.transpose(1, 2, 0))
    np.testing.assert_allclose(keras_out, torch_out, rtol=1e-12)


def test_strict_errors_list_every_problem():
    spec = _spec()
    canon = _random(spec)
    del canon["emb.fc.bias"]
    canon["emb.extra"] = np.zeros(1)
    canon["head.weight"] = np.zeros((3, 3))
    with pytest.raises(W.WeightMismatchError) as e:
        W.to_framework(canon, spec, "keras")
    msg = str(e.value)
    assert "missing (1): emb.fc.bias" in msg
    assert "unexpected (1): emb.extra" in msg
    assert "head.weight: expected (2, 5), found (3, 3)" in msg
    with pytest.raises(W.WeightMismatchError, match="emb/conv1/kernel"):
        W.to_canonical({"emb/conv1/kernel": np.zeros((4, 1, 3, 3))}, spec, "keras")
    with pytest.raises(ValueError, match="framework must be one of"):
        W.to_framework(_random(spec), spec, "jax")


def test_checkpoint_file_round_trip_and_atomicity(tmp_path):
    spec = _spec()
    canon = _random(spec)
    path = tmp_path / "ck.safetensors"
    W.save_canonical(path, canon, {"model": "x", "step": 3})
    arrays, meta = W.load_canonical(path)
    assert meta["step"] == 3 and meta["format"] == W.CHECKPOINT_FORMAT
    for k in canon:
        np.testing.assert_array_equal(arrays[k], canon[k])
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp left behind


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ck.safetensors"
    W.save_canonical(path, {"a": np.ones(2, np.float32)}, {"step": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON serializable"):
        W.save_canonical(path, {"a": np.ones(2, np.float32)}, {"step": object()})  # not JSON
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_checkpoint_files_are_refused_clearly(tmp_path):
    path = tmp_path / "ck.safetensors"
    W.save_canonical(path, {"a": np.ones(64, np.float32)}, {"step": 1})
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        W.load_canonical(trunc)
    pickle_file = tmp_path / "model.pt"
    pickle_file.write_bytes(b"\x80\x04\x95" + b"\0" * 20)
    with pytest.raises(ValueError, match="never unpickles"):
        W.load_canonical(pickle_file)
    with pytest.raises(FileNotFoundError):
        W.load_canonical(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("header_length", [0x480, 0x4B50])  # first bytes 0x80 / "PK"
def test_a_header_length_that_looks_like_a_pickle_or_zip_still_loads(tmp_path, header_length):
    """A safetensors file starts with its header's length (a multiple of 8): 1 in 32 begins
    with 0x80 (a pickle's first byte), 1 in 8192 with "PK" (a zip's). Only the ``{`` after
    it decides."""
    from metalearn.convert import detect_format

    path = tmp_path / "ck.safetensors"
    pad = 0
    for _ in range(20):  # grow the metadata until the header has exactly that length
        W.save_canonical(path, {"a": np.ones(3, np.float32)}, {"model": "x", "pad": "p" * pad})
        found = int.from_bytes(path.read_bytes()[:8], "little")
        if found == header_length:
            break
        pad += max(1, header_length - found)
    else:
        pytest.fail(f"no padding gives a header of {header_length} bytes")
    arrays, meta = W.load_canonical(path)
    assert meta["model"] == "x" and arrays["a"].tolist() == [1.0, 1.0, 1.0]
    assert detect_format(path) == "canonical"
