"""``metalearn convert``: torch → Keras → torch is bit-identical; bad files are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metalearn.cli import main
from metalearn.convert import detect_format, read_any
from metalearn_shared.config import BackboneConfig
from metalearn_shared.models.siamese import SiameseConfig

pytest.importorskip("torch")
pytest.importorskip("keras")


@pytest.fixture
def canonical_ckpt(tmp_path):
    from metalearn_torch.checkpoint import save_checkpoint
    from metalearn_torch.models import build_model

    cfg = SiameseConfig(backbone=BackboneConfig(name="conv4"), head="koch")
    model = build_model(cfg, seed=1)
    # Non-trivial BatchNorm statistics, so that buffers are checked as well.
    with __import__("torch").no_grad():
        for m in model.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_()
    return save_checkpoint(model, tmp_path / "ck.safetensors", step=7)


def test_torch_keras_torch_is_bit_identical(canonical_ckpt, tmp_path, capsys):
    src, _ = read_any(canonical_ckpt)
    t1 = tmp_path / "a.torch.safetensors"
    k = tmp_path / "b.keras"
    t2 = tmp_path / "c.torch.safetensors"
    c = tmp_path / "d.canonical.safetensors"
    assert main(["convert", str(canonical_ckpt), "--to", "torch", "--out", str(t1)]) == 0
    assert main(["convert", str(t1), "--to", "tf", "--out", str(k)]) == 0
    assert main(["convert", str(k), "--to", "torch", "--out", str(t2)]) == 0
    assert main(["convert", str(t2), "--to", "canonical", "--out", str(c)]) == 0
    assert [detect_format(p) for p in (t1, k, t2, c)] == ["torch", "keras", "torch", "canonical"]
    back, meta = read_any(c)
    assert set(back) == set(src)
    for name in src:
        assert back[name].dtype == src[name].dtype
        np.testing.assert_array_equal(back[name], src[name], err_msg=name)
    assert meta["step"] == 7 and meta["config"]["head"] == "koch"
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["format"] == "canonical" and out["model"] == "siamese"


def test_torch_format_loads_with_plain_torch(canonical_ckpt, tmp_path):
    from safetensors.torch import load_file

    from metalearn_torch.models import build_model

    t1 = tmp_path / "a.torch.safetensors"
    assert main(["convert", str(canonical_ckpt), "--to", "torch", "--out", str(t1)]) == 0
    model = build_model(SiameseConfig(backbone=BackboneConfig(name="conv4"), head="koch"))
    model.load_state_dict(load_file(t1))  # strict: every key of the torch state_dict


def test_refuses_unsafe_truncated_and_mismatched(canonical_ckpt, tmp_path, capsys):
    pkl = tmp_path / "model.pt"
    pkl.write_bytes(b"\x80\x04\x95" + b"\0" * 32)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 32)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(canonical_ckpt.read_bytes()[: 200])
    for path, msg in [(pkl, "never unpickles"), (h5, "legacy HDF5"), (trunc, "truncated or corrupt")]:
        assert main(["convert", str(path), "--to", "tf"]) == 2
        assert msg in capsys.readouterr().err
    # A checkpoint whose arrays don't fit its config: every problem listed.
    from metalearn_shared.weights import load_canonical, save_canonical

    arrays, meta = load_canonical(canonical_ckpt)
    arrays.pop("head.bias")
    arrays["head.weight"] = np.zeros((2, 3), np.float32)
    arrays["extra.weight"] = np.zeros(1, np.float32)
    bad = save_canonical(tmp_path / "bad.safetensors", arrays, meta)
    assert main(["convert", str(bad), "--to", "torch"]) == 2
    err = capsys.readouterr().err
    assert "missing (1): head.bias" in err and "unexpected (1): extra.weight" in err
    assert "head.weight: expected (1, 64), found (2, 3)" in err
    assert not (tmp_path / "bad.torch.safetensors").exists()
