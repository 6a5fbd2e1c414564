"""Siamese and Prototypical networks, and their losses, in each framework against the spec.

Each test runs once per framework (``fw`` fixture), through a small adapter, so both sides
are held to the same assertions: weight names equal to ``param_spec`` exactly, output
shapes, clear errors on bad input, backbones against the numpy reference forward pass
(BatchNorm in both modes, running statistics included), heads and losses against the numpy
spec (edge cases too), the cosine-embedding loss against ``torch.nn.CosineEmbeddingLoss``,
the task contract, seeding, channels-last (torch) and the ``.keras`` round trip (Keras).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from metalearn_shared import losses as spec_losses
from metalearn_shared.config import BackboneConfig
from metalearn_shared.data.glyphs import make_glyphs
from metalearn_shared.episodes import FewShotSampler, PairSampler
from metalearn_shared.models import param_spec
from metalearn_shared.models import protonet as protonet_spec
from metalearn_shared.models import siamese as siamese_spec
from metalearn_shared.models.backbones import (
    backbone_forward,
    backbone_spec,
    embedding_chw,
    flat_hwc_to_chw,
    variant_backbones,
)
from metalearn_shared.models.protonet import ProtoNetConfig
from metalearn_shared.models.siamese import SiameseConfig
from metalearn_shared.tolerances import assert_close, assert_close_scaled
from metalearn_shared.weights import framework_shape

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

S = 28  # image size
#: Every backbone as the parity suite runs it (ResNet-12 narrow, at 16 px).
BACKBONE = {b.name: b for b in variant_backbones(S)}


def _configs() -> list:
    """Every Siamese head × backbone and ProtoNet backbone, plus conv4 on a 2×2 final map."""
    cases = [*siamese_spec.variants(), *protonet_spec.variants(),
             ("siamese-koch-conv4-32px", SiameseConfig(BackboneConfig("conv4", image_size=32), head="koch"))]
    return [pytest.param(config, id=name) for name, config in cases]


# -- one adapter per framework -----------------------------------------------------------
class _TorchFW:
    name = "torch"

    def __init__(self):
        import torch

        import metalearn_torch.checkpoint as ckpt
        import metalearn_torch.losses as losses
        from metalearn_torch.models import build_model

        self.torch, self.ckpt, self.losses, self.build_model = torch, ckpt, losses, build_model

    def build(self, config, seed=0):
        return self.build_model(config, seed=seed)

    def t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a))

    def np(self, x):
        return x.detach().cpu().numpy()

    def native(self, x):  # (B, H, W) -> (B, 1, H, W)
        return x[:, None]

    def names_shapes(self, model):
        return {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}

    def pairs(self, model, x1, x2, training=False):
        model.train(training)
        with self.torch.no_grad():
            return self.np(model(self.t(x1), self.t(x2)))

    def logits(self, model, sx, sy, qx, training=False, ways=None):
        model.train(training)
        with self.torch.no_grad():
            return self.np(model(self.t(sx), self.t(sy), self.t(qx), ways))

    def embed(self, model, x, training=False):
        model.train(training)
        with self.torch.no_grad():
            return self.np(model.embed(self.t(x)))

    def compare(self, model, e1, e2):
        with self.torch.no_grad():
            return self.np(model.compare(self.t(e1), self.t(e2)))

    def scores(self, model, s, q):
        with self.torch.no_grad():
            return self.np(model.support_scores(self.t(s), self.t(q)))

    def predict(self, model, sx, sy, qx):
        return self.np(model.predict_episode(sx, sy, qx))

    def same_probability(self, model, x1, x2):
        with self.torch.no_grad():
            return self.np(model.eval().same_probability(self.t(x1), self.t(x2)))

    def loss_fn(self, name, y, pred, **kw):
        return self.np(getattr(self.losses, name)(self.t(y), self.t(pred), **kw))

    def loss_obj(self, loss, y, pred):
        return self.np(loss(self.t(pred), self.t(y)))  # torch order: (input, target)

    def model_loss(self, model, y, out):
        return float(model.make_loss()(self.t(out), self.t(y)))

    def batch_accuracy(self, model, out, y):
        return float(model.batch_accuracy(self.t(out), self.t(y)))

    def cosine(self, x1, x2):
        return self.np(self.losses.cosine_similarity(self.t(x1), self.t(x2)))


class _KerasFW:
    name = "keras"

    def __init__(self):
        import keras

        import metalearn_tf.checkpoint as ckpt
        import metalearn_tf.losses as losses
        from metalearn_tf.models import build_model

        self.keras, self.ckpt, self.losses, self.build_model = keras, ckpt, losses, build_model

    def build(self, config, seed=0):
        return self.build_model(config, seed=seed)

    def np(self, x):
        return self.keras.ops.convert_to_numpy(x)

    def native(self, x):  # (B, H, W) -> (B, H, W, 1)
        return x[..., None]

    def names_shapes(self, model):
        return {k: tuple(v.shape) for k, v in self.ckpt.keras_variables(model).items()}

    def pairs(self, model, x1, x2, training=False):
        return self.np(model((x1, x2), training=training))

    def logits(self, model, sx, sy, qx, training=False, ways=None):
        return self.np(model((sx, sy, qx), training=training, ways=ways))

    def embed(self, model, x, training=False):
        emb = self.np(model.embed(x, training=training))
        return flat_hwc_to_chw(emb, embedding_chw(model.config.backbone))

    def compare(self, model, e1, e2):
        return self.np(model.compare(self.keras.ops.convert_to_tensor(e1),
                                     self.keras.ops.convert_to_tensor(e2)))

    def scores(self, model, s, q):
        return self.np(model.support_scores(self.keras.ops.convert_to_tensor(s),
                                            self.keras.ops.convert_to_tensor(q)))

    def predict(self, model, sx, sy, qx):
        return self.np(model.predict_episode(sx, sy, qx))

    def same_probability(self, model, x1, x2):
        return self.np(model.same_probability(x1, x2))

    def loss_fn(self, name, y, pred, **kw):
        ops = self.keras.ops
        return self.np(getattr(self.losses, name)(ops.convert_to_tensor(y),
                                                  ops.convert_to_tensor(pred), **kw))

    def loss_obj(self, loss, y, pred):
        return self.np(loss(y, pred))  # Keras order: (y_true, y_pred)

    def model_loss(self, model, y, out):
        return float(model.make_loss()(y, out))

    def batch_accuracy(self, model, out, y):
        ops = self.keras.ops
        return float(model.batch_accuracy(ops.convert_to_tensor(out), ops.convert_to_tensor(y)))

    def cosine(self, x1, x2):
        ops = self.keras.ops
        return self.np(self.losses.cosine_similarity(ops.convert_to_tensor(x1),
                                                     ops.convert_to_tensor(x2)))


@pytest.fixture(params=["torch", "keras"])
def fw(request):
    if request.param == "torch":
        pytest.importorskip("torch")
        return _TorchFW()
    pytest.importorskip("keras")
    return _KerasFW()


@pytest.fixture(scope="module")
def glyphs():
    return make_glyphs(num_classes=12, instances=6, size=S, seed=0)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _perturb_bn(fw, model, seed=0):
    """Non-trivial BatchNorm affine and running statistics (torch init has 0/1)."""
    rng = _rng(seed)
    arrays = fw.ckpt.get_canonical(model)
    for name, v in arrays.items():
        if ".bn" in name:
            lo, hi = (0.5, 2.0) if name.endswith(("weight", "running_var")) else (-0.3, 0.3)
            arrays[name] = rng.uniform(lo, hi, v.shape).astype(np.float32)
    fw.ckpt.set_canonical(model, arrays)
    return arrays


# -- weights: names and shapes equal the spec, by construction -----------------------------
@pytest.mark.parametrize("config", _configs())
def test_weight_names_and_shapes_equal_param_spec(fw, config):
    model = fw.build(config)
    key = "name" if fw.name == "torch" else "keras_name"
    framework = "torch" if fw.name == "torch" else "keras"
    expected = {getattr(p, key): framework_shape(p, framework) for p in param_spec(config)}
    assert fw.names_shapes(model) == expected


def test_seed_makes_initial_weights_repeat(fw):
    config = SiameseConfig(BackboneConfig("seed"), head="koch")
    a, b, c = (fw.ckpt.get_canonical(fw.build(config, seed=s)) for s in (3, 3, 4))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert any(not np.array_equal(a[n], c[n]) for n in a)


def test_resnet12_blocks_and_the_single_channel_shortcut():
    """ResNet-12's channels grow 1 : 2.5 : 5 : 10 (64-160-320-640 by default), each block
    has three 3×3 conv-BN and a 1×1 shortcut conv; only block 1's, reading the one-channel
    image, has no BatchNorm (it would make the conv scale-invariant: see the spec)."""
    assert BackboneConfig("resnet12").block_channels == (64, 160, 320, 640)
    assert BackboneConfig("resnet12").output_dim == 640  # 28 px: a 1×1 final map
    spec = {p.name: p.shape for p in backbone_spec(BackboneConfig("resnet12", hidden=8))}
    assert spec["embedding.block1.conv1.weight"] == (8, 1, 3, 3)
    assert spec["embedding.block1.shortcut.weight"] == (8, 1, 1, 1)
    assert spec["embedding.block2.conv1.weight"] == (20, 8, 3, 3)
    assert spec["embedding.block4.shortcut.weight"] == (80, 40, 1, 1)
    assert spec["embedding.block4.conv3.weight"] == (80, 80, 3, 3)
    norms = {n.split(".")[1] for n in spec if ".shortcut_bn." in n}
    assert norms == {"block2", "block3", "block4"}
    assert len(spec) == 4 * (3 * 5 + 1) + 3 * 4


# -- shapes and bad input ------------------------------------------------------------------
@pytest.mark.parametrize("backbone", list(BACKBONE))
def test_output_shapes_and_native_layout(fw, backbone):
    rng = _rng()
    bb = BACKBONE[backbone]
    s = bb.image_size
    x1, x2 = rng.random((2, 4, s, s), dtype=np.float32)
    siamese = fw.build(SiameseConfig(bb, head="koch"))
    out = fw.pairs(siamese, x1, x2)
    assert out.shape == (4,)
    assert_close(fw.pairs(siamese, fw.native(x1), fw.native(x2)), out, "forward")
    assert fw.embed(siamese, x1).shape == (4, bb.output_dim)

    proto = fw.build(ProtoNetConfig(bb))
    sx, qx = rng.random((6, s, s), dtype=np.float32), rng.random((9, s, s), dtype=np.float32)
    sy = np.repeat(np.arange(3), 2)
    logits = fw.logits(proto, sx, sy, qx)
    assert logits.shape == (9, 3)
    assert_close(fw.logits(proto, sx, sy, qx, ways=3), logits, "forward")
    assert_close(fw.logits(proto, fw.native(sx), sy, fw.native(qx)), logits, "forward")
    pred = fw.predict(proto, sx, sy, qx)
    assert pred.shape == (9,) and np.issubdtype(pred.dtype, np.integer)


@pytest.mark.parametrize("shape,dtype,found", [
    ((4, 27, 27), np.float32, "(4, 27, 27)"),  # wrong size
    ((4, 3, S, S), np.float32, "(4, 3, 28, 28)"),  # channels first, 3 channels
    ((4, S, S, 3), np.float32, "(4, 28, 28, 3)"),  # channels last, 3 channels
    ((S, S), np.float32, "(28, 28)"),  # no batch axis
    ((4, S, S), np.uint8, "uint8"),  # raw dataset images
])
def test_bad_images_are_clear_errors(fw, shape, dtype, found):
    model = fw.build(SiameseConfig(BackboneConfig("seed")))
    bad = np.zeros(shape, dtype=dtype)
    good = np.zeros((4, S, S), np.float32)
    with pytest.raises(ValueError, match=r"expected float32 images of shape \(B, 28, 28\)") as e:
        fw.pairs(model, bad, good)
    assert found in str(e.value) and "x1" in str(e.value)


def test_mismatched_inputs_are_clear_errors(fw):
    siamese = fw.build(SiameseConfig(BackboneConfig("seed")))
    with pytest.raises(ValueError, match="same number of images"):
        fw.pairs(siamese, np.zeros((4, S, S), np.float32), np.zeros((3, S, S), np.float32))
    proto = fw.build(ProtoNetConfig(BackboneConfig("seed")))
    x = np.zeros((4, S, S), np.float32)
    with pytest.raises(ValueError, match=r"support_y: expected shape \(4,\)"):
        fw.logits(proto, x, np.arange(3), x)
    with pytest.raises(ValueError, match="query_x"):
        fw.logits(proto, x, np.arange(4), np.zeros((4, S + 1, S + 1), np.float32))


def test_torch_rejects_other_float_dtypes():
    torch = pytest.importorskip("torch")
    from metalearn_torch.models import build_model

    model = build_model(SiameseConfig(BackboneConfig("seed")))
    x = torch.zeros(2, S, S, dtype=torch.float64)
    with pytest.raises(ValueError, match="found shape \\(2, 28, 28\\), dtype float64"):
        model(x, x)


def test_batched_episodes_are_refused_by_the_task_contract(glyphs):
    pairs = PairSampler(glyphs, batch=4, seed=0).batch(0, 2)
    with pytest.raises(ValueError, match=r"episode\(i\)"):
        siamese_spec.inputs_and_target(pairs)
    episodes = FewShotSampler(glyphs, 3, 1, 2, seed=0).batch(0, 2)
    with pytest.raises(ValueError, match=r"episode\(i\)"):
        protonet_spec.inputs_and_target(episodes)


# -- the backbones against the numpy reference forward pass ---------------------------------
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("backbone", list(BACKBONE))
def test_backbone_matches_numpy_reference(fw, glyphs, backbone, training):
    config = ProtoNetConfig(BACKBONE[backbone])
    model = fw.build(config)
    before = _perturb_bn(fw, model)
    s = config.backbone.image_size
    x = glyphs.images[:16, :s, :s].astype(np.float32) / 255  # (16, s, s): the top-left crop
    ref, ref_stats = backbone_forward(before, x, config.backbone, training=training)
    assert_close_scaled(fw.embed(model, x, training=training), ref, "forward", what="embedding")
    after = fw.ckpt.get_canonical(model)
    for name in ref_stats:  # torch's update: unbiased variance, running = (1-m) r + m batch
        assert_close_scaled(after[name], ref_stats[name], "forward", what=name)
    if training and backbone != "seed":
        last = "embedding.bn4" if backbone == "conv4" else "embedding.block4.shortcut_bn"
        assert ref_stats and not np.allclose(ref_stats[f"{last}.running_var"],
                                             before[f"{last}.running_var"])
    else:
        for name in before:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)


# -- heads and losses against the numpy spec -------------------------------------------------
@pytest.mark.parametrize(("head", "margin", "t", "below"), [
    ("contrastive", 0.6, 0.3, True), ("cosine", 0.0, 0.5, False), ("cosine", 0.4, 0.7, False),
    ("koch", None, 0.0, False)])
def test_batch_accuracy_uses_the_heads_threshold(fw, head, margin, t, below):
    """The training log's pair accuracy: each head's threshold, in the spec and both
    frameworks. The cosine head's is (1 + margin) / 2: conv embeddings are non-negative,
    so a threshold of 0 called almost every pair *same* (a cosine run logged 50%)."""
    config = SiameseConfig(BackboneConfig("seed"), head=head, margin=margin)
    assert siamese_spec.same_threshold(config) == pytest.approx((t, below))
    out = np.float32(t) + np.array([-0.2, -0.05, 0.05, 0.2, -0.1, 0.1], np.float32)
    y = np.array([1, 1, 1, 1, 0, 0], np.float32)
    want = (np.mean([1, 1, 0, 0, 0, 1]) if below else np.mean([0, 0, 1, 1, 1, 0]))
    assert siamese_spec.batch_accuracy(config, out, y) == pytest.approx(want)
    assert fw.batch_accuracy(fw.build(config), out, y) == pytest.approx(want)


@pytest.mark.parametrize("head", ["contrastive", "cosine", "koch"])
def test_siamese_heads_match_spec(fw, head):
    config = SiameseConfig(BackboneConfig("seed"), head=head, margin=0.7)
    model = fw.build(config)
    params = fw.ckpt.get_canonical(model)
    rng = _rng(1)
    e1, e2 = rng.normal(size=(2, 6, 128)).astype(np.float32)
    e2[0] = e1[0]  # zero distance
    assert_close(fw.compare(model, e1, e2), siamese_spec.pair_output(config, e1, e2, params), "spec")
    y = np.array([1, 0, 1, 0, 1, 0], np.float32)
    out = fw.compare(model, e1, e2)
    ref = siamese_spec.pair_loss(config, y, e1, e2, params).mean()
    assert_close(fw.model_loss(model, y, out), ref, "spec")
    s, q = e1, rng.normal(size=(4, 128)).astype(np.float32)
    ref_scores = siamese_spec.support_scores(config, s, q, params)
    assert_close(fw.scores(model, s, q), ref_scores, "spec")


@pytest.mark.parametrize("head", ["contrastive", "cosine", "koch"])
def test_siamese_predict_episode(fw, glyphs, head):
    config = SiameseConfig(BackboneConfig("conv4"), head=head)
    model = fw.build(config)
    _perturb_bn(fw, model)
    ep = FewShotSampler(glyphs, 4, 2, 3, seed=0).episode(0)
    pred = fw.predict(model, ep.support_x, ep.support_y, ep.query_x)
    s, q = fw.embed(model, ep.support_x), fw.embed(model, ep.query_x)
    params = fw.ckpt.get_canonical(model)
    ref = siamese_spec.predict_from_scores(siamese_spec.support_scores(config, s, q, params),
                                           ep.support_y)
    np.testing.assert_array_equal(pred, ref)
    if head != "koch":  # a query identical to a support image is its own nearest neighbour
        sy = np.array([3, 1, 2, 0, 2, 1, 3, 0])
        np.testing.assert_array_equal(fw.predict(model, ep.support_x, sy, ep.support_x), sy)


def test_protonet_logits_and_prediction_match_spec(fw, glyphs):
    model = fw.build(ProtoNetConfig(BackboneConfig("conv4")))
    _perturb_bn(fw, model)
    ep = FewShotSampler(glyphs, 5, 2, 3, seed=1).episode(0)
    logits = fw.logits(model, ep.support_x, ep.support_y, ep.query_x)
    s, q = fw.embed(model, ep.support_x), fw.embed(model, ep.query_x)
    ref = protonet_spec.logits(s, ep.support_y, q)
    assert_close_scaled(logits, ref, "forward")
    np.testing.assert_array_equal(fw.predict(model, ep.support_x, ep.support_y, ep.query_x),
                                  protonet_spec.predict(ref))
    one_shot = FewShotSampler(glyphs, 5, 1, 0, seed=2).episode(0)  # queries = the supports
    np.testing.assert_array_equal(
        fw.predict(model, one_shot.support_x, one_shot.support_y, one_shot.support_x),
        one_shot.support_y)


def test_koch_same_probability_is_the_sigmoid_of_the_logit(fw):
    rng = _rng(2)
    x1, x2 = rng.random((2, 3, S, S), dtype=np.float32)
    koch = fw.build(SiameseConfig(BackboneConfig("seed"), head="koch"))
    p = fw.same_probability(koch, x1, x2)
    assert_close(p, 1 / (1 + np.exp(-fw.pairs(koch, x1, x2))), "spec")
    cosine = fw.build(SiameseConfig(BackboneConfig("seed"), head="cosine"))
    with pytest.raises(ValueError, match="koch head"):
        cosine.same_probability(x1, x2)


_EDGE_LOGITS = np.array([np.inf, -np.inf, np.inf, -np.inf, 1e4, -1e4, 1e4, 0.0, -3.0, 2.5],
                        np.float32)
_EDGE_Y = np.array([1, 0, 0, 1, 1, 0, 0, 1, 0, 1], np.float32)


def test_koch_loss_matches_spec_including_infinite_logits(fw):
    got = fw.loss_fn("koch_verification_loss", _EDGE_Y, _EDGE_LOGITS)
    ref = spec_losses.koch_verification(_EDGE_Y, _EDGE_LOGITS)
    assert_close(got, ref, "spec")  # inf where the logit is infinitely wrong, else finite
    right = (_EDGE_Y == 1) == (_EDGE_LOGITS > 0)
    assert np.all(np.isfinite(got[right])) and not np.isnan(got).any()
    soft = np.array([0.25, 0.5], np.float32), np.array([1.5, -2.0], np.float32)
    assert_close(fw.loss_fn("koch_verification_loss", *soft),
                 spec_losses.koch_verification(*soft), "spec")


def test_contrastive_loss_matches_spec_at_zero_distance_and_large_margin(fw):
    y = np.array([1, 0, 1, 0, 0, 1], np.float32)
    d = np.array([0.0, 0.0, 2.5, 0.3, 3.0, 1e-6], np.float32)
    for margin in (1.0, 1e3):
        got = fw.loss_fn("contrastive_loss", y, d, margin=margin)
        assert_close(got, spec_losses.contrastive(y, d, margin), "spec", what=f"m={margin}")
    assert fw.loss_fn("contrastive_loss", y[:2], d[:2], margin=1e3)[1] == pytest.approx(5e5)


def test_euclidean_distance_has_a_finite_gradient_at_zero_distance(fw):
    e = np.ones((2, 5), np.float32)
    if fw.name == "torch":
        a = fw.t(e).requires_grad_()
        fw.losses.euclidean_distance(a, fw.t(e)).sum().backward()
        grad = fw.np(a.grad)
    else:
        import tensorflow as tf

        a = tf.Variable(e)
        with tf.GradientTape() as tape:
            d = fw.losses.euclidean_distance(a, tf.constant(e))
        grad = tape.gradient(d, a).numpy()
    assert np.all(np.isfinite(grad))
    assert_close(fw.loss_fn("euclidean_distance", e, e), np.sqrt(spec_losses.DISTANCE_EPS), "spec")


def test_cosine_loss_matches_spec(fw):
    rng = _rng(3)
    x1, x2 = rng.normal(size=(2, 8, 16)).astype(np.float32)
    x2[1] = 0.0  # a zero vector: cosine 0, finite
    x2[2] = 2 * x1[2]  # parallel
    y = np.array([1, -1, 1, -1, 1, -1, 1, -1], np.float32)
    cos = fw.cosine(x1, x2)
    assert_close(cos, spec_losses.cosine_similarity_torch(x1, x2), "spec")
    for margin in (0.0, 0.5):
        got = fw.loss_fn("cosine_embedding_loss", y, cos, margin=margin)
        assert_close(got, spec_losses.cosine_embedding(y, x1, x2, margin), "spec")


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_cosine_loss_matches_torch_cosine_embedding_loss(fw, margin):
    torch = pytest.importorskip("torch")
    rng = _rng(4)
    x1, x2 = rng.normal(size=(2, 10, 32)).astype(np.float32)
    x2[3] = 0.0
    y01 = rng.integers(0, 2, 10).astype(np.float32)
    y_sign = 2 * y01 - 1
    ref = torch.nn.CosineEmbeddingLoss(margin=margin)(
        torch.from_numpy(x1), torch.from_numpy(x2), torch.from_numpy(y_sign)).item()
    cos = fw.cosine(x1, x2)
    sign = fw.losses.CosineEmbeddingLoss(margin=margin, labels="sign")
    binary = fw.losses.CosineEmbeddingLoss(margin=margin)  # the samplers' 1 = same, 0 = different
    assert_close(fw.loss_obj(sign, y_sign, cos), ref, "loss")
    assert_close(fw.loss_obj(binary, y01, cos), ref, "loss")


def test_prototypical_loss_matches_spec(fw):
    rng = _rng(5)
    logits = -rng.uniform(0, 200, (9, 3)).astype(np.float32)  # -d^2 can be large
    y = np.array([0, 1, 2] * 3)
    got = fw.loss_fn("prototypical_loss", y, logits)
    assert np.all(np.isfinite(got))
    assert_close(got, spec_losses.prototypical(y, logits), "spec")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_classes_reduce_like_their_framework(fw, reduction):
    keras_reduction = {"mean": "sum_over_batch_size", "sum": "sum", "none": None}[reduction]
    kw = {"reduction": reduction if fw.name == "torch" else keras_reduction}
    y = np.array([1, 0, 1, 0], np.float32)
    d = np.array([0.2, 0.4, 1.5, 2.0], np.float32)
    per = spec_losses.contrastive(y, d, 0.9)
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    assert_close(fw.loss_obj(fw.losses.ContrastiveLoss(margin=0.9, **kw), y, d), ref, "spec")
    z = np.array([-1.0, 3.0, 0.5, -2.0], np.float32)
    per = spec_losses.koch_verification(y, z)
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    assert_close(fw.loss_obj(fw.losses.KochVerificationLoss(**kw), y, z), ref, "spec")


@pytest.mark.parametrize("head,cls", [("contrastive", "ContrastiveLoss"),
                                      ("cosine", "CosineEmbeddingLoss"),
                                      ("koch", "KochVerificationLoss")])
def test_make_loss_pairs_each_head_with_its_loss(fw, head, cls):
    model = fw.build(SiameseConfig(BackboneConfig("seed"), head=head, margin=0.3))
    loss = model.make_loss()
    assert type(loss).__name__ == cls
    if head != "koch":
        margin = loss.margin if fw.name == "torch" else loss.get_config()["margin"]
        assert margin == 0.3


def test_bad_loss_labels_argument(fw):
    with pytest.raises(ValueError, match="'binary'"):
        fw.losses.CosineEmbeddingLoss(labels="pm1")


# -- the task contract ------------------------------------------------------------------------
def test_torch_task_contract(glyphs):
    torch = pytest.importorskip("torch")
    from metalearn_torch.models import build_model

    # ProtoNet's inputs end with the episode's ways as an int (no host sync in forward).
    for config, batch, ints in [
        (SiameseConfig(BackboneConfig("conv4"), head="cosine"), PairSampler(glyphs, 6, 0).episode(0), ()),
        (ProtoNetConfig(BackboneConfig("conv4")), FewShotSampler(glyphs, 3, 1, 2, 0).episode(0), (3,)),
    ]:
        model = build_model(config, seed=0)
        inputs, target = model.inputs_and_target(batch)
        tensors = inputs[:len(inputs) - len(ints)]
        assert all(isinstance(t, torch.Tensor) for t in (*tensors, target))
        assert inputs[len(tensors):] == ints and all(type(i) is int for i in ints)
        with torch.no_grad():  # ways given or inferred (max label + 1): the same logits
            assert torch.equal(model.eval()(*inputs), model(*tensors))
        model.train()
        loss = model.compute_loss_on(batch)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert torch.equal(loss, model.make_loss()(model(*inputs), target))
        assert all(p.grad is not None for p in model.parameters())
        ep = FewShotSampler(glyphs, 3, 1, 2, 1).episode(0)
        model.predict_episode(ep.support_x, ep.support_y, ep.query_x)
        assert model.training  # predict_episode restored the mode


def test_torch_channels_last_gives_the_same_outputs(glyphs):
    torch = pytest.importorskip("torch")
    from metalearn_torch.models import build_model

    for backbone in BACKBONE.values():
        s = backbone.image_size
        x = torch.from_numpy(glyphs.images[:8, :s, :s].astype(np.float32) / 255)
        model = build_model(SiameseConfig(backbone), seed=0).eval()
        ref = model.embed(x)
        model = model.to(memory_format=torch.channels_last)
        assert model.embedding.prepare(x).is_contiguous(memory_format=torch.channels_last)
        assert_close(model.embed(x).detach(), ref.detach(), "forward")


def test_keras_task_contract_compile_fit(glyphs):
    keras = pytest.importorskip("keras")
    from metalearn_tf.models import build_model

    class Items(keras.utils.PyDataset):
        def __init__(self, items):
            super().__init__()
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    for config, batches in [
        (SiameseConfig(BackboneConfig("seed"), head="koch"),
         [PairSampler(glyphs, 6, 0).episode(i) for i in range(2)]),
        (ProtoNetConfig(BackboneConfig("conv4")),
         [FewShotSampler(glyphs, 3, 1, 2, 0).episode(i) for i in range(2)]),
    ]:
        model = build_model(config, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=model.make_loss())
        hist = model.fit(Items([model.inputs_and_target(b) for b in batches]), epochs=1,
                         verbose=0, shuffle=False)
        assert np.isfinite(hist.history["loss"][-1])


def test_keras_file_round_trip(tmp_path, glyphs):
    keras = pytest.importorskip("keras")
    fw = _KerasFW()
    ep = FewShotSampler(glyphs, 3, 2, 2, seed=0).episode(0)
    for config in (SiameseConfig(BackboneConfig("conv4", image_size=S), head="koch", margin=0.5),
                   ProtoNetConfig(BackboneConfig("conv4"))):
        model = fw.build(config)
        _perturb_bn(fw, model)
        model.compile(optimizer="sgd", loss=model.make_loss())
        path = tmp_path / f"{config.model}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert type(loaded) is type(model) and loaded.config == config
        assert type(loaded.loss) is type(model.loss)
        assert loaded.loss.get_config() == model.loss.get_config()
        for name, value in fw.ckpt.get_canonical(model).items():
            np.testing.assert_array_equal(fw.ckpt.get_canonical(loaded)[name], value, err_msg=name)
        if config.model == "siamese":
            a = fw.pairs(model, ep.support_x, ep.query_x[:6])
            b = fw.pairs(loaded, ep.support_x, ep.query_x[:6])
        else:
            a = fw.logits(model, ep.support_x, ep.support_y, ep.query_x)
            b = fw.logits(loaded, ep.support_x, ep.support_y, ep.query_x)
        np.testing.assert_array_equal(a, b)
