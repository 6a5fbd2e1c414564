from __future__ import annotations

import pytest

from metalearn_shared.config import BackboneConfig
from metalearn_shared.models import config_from_dict, default_config
from metalearn_shared.models import names as model_names
from metalearn_shared.models.mann import MANNConfig
from metalearn_shared.models.siamese import SiameseConfig


@pytest.mark.parametrize("name", sorted(model_names()))
def test_config_dict_round_trip(name):
    cfg = default_config(name)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_nested_backbone_round_trip_and_frozen():
    cfg = SiameseConfig(backbone=BackboneConfig(name="seed", image_size=28), head="koch")
    back = config_from_dict(cfg.to_dict())
    assert back == cfg and back.backbone.name == "seed"
    with pytest.raises(AttributeError):
        cfg.head = "cosine"  # frozen


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="unknown head 'l2'"):
        SiameseConfig(head="l2")
    with pytest.raises(ValueError, match="unknown backbone"):
        BackboneConfig(name="resnet")
    with pytest.raises(ValueError, match="at least 16"):
        BackboneConfig(image_size=8)
    with pytest.raises(ValueError, match="unknown keys"):
        MANNConfig.from_dict({"memory_slot": 3})
    with pytest.raises(ValueError, match="known models"):
        config_from_dict({"model": "no-such-model"})


def test_derived_sizes():
    assert BackboneConfig(image_size=28).output_dim == 64  # 28 -> 14 -> 7 -> 3 -> 1
    assert BackboneConfig(name="seed").seed_flat_chw == (128, 4, 4)
    assert BackboneConfig(bn_momentum=0.1).keras_bn_momentum == pytest.approx(0.9)
    assert MANNConfig().input_size == 400 and MANNConfig(label_groups=5).label_size == 25
