"""The toy model in Keras 3 (``tests.toy_model.spec``)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tests.toy_model.spec import ToyConfig, inputs_and_target


@keras.saving.register_keras_serializable("metalearn_tests")
class ToyNet(keras.Model):
    def __init__(self, config: ToyConfig | dict[str, Any], **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = ToyConfig.from_dict(config)
        super().__init__(**kwargs)
        self.config = config
        self.proj = keras.layers.Dense(config.embedding_dim, name="proj")

    def build(self, input_shape: Any = None) -> None:
        self.proj.build((None, self.config.image_size**2))

    def call(self, inputs: Any, training: bool | None = None, ways: int | None = None) -> Any:
        support_x, support_y, query_x = inputs
        s = self.proj(ops.reshape(support_x, (ops.shape(support_x)[0], -1)))
        q = self.proj(ops.reshape(query_x, (ops.shape(query_x)[0], -1)))
        support_y = ops.cast(support_y, "int32")
        if ways is None:
            ways = ops.max(support_y) + 1
        onehot = ops.one_hot(support_y, ways, dtype=s.dtype)
        protos = ops.matmul(ops.transpose(onehot), s) / ops.sum(onehot, axis=0)[:, None]
        return -ops.sum((q[:, None, :] - protos[None]) ** 2, axis=-1)

    def make_loss(self) -> keras.losses.Loss:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @staticmethod
    def inputs_and_target(batch: Any) -> tuple[tuple[Any, ...], Any]:
        return inputs_and_target(batch)

    def batch_accuracy(self, output: Any, target: Any) -> Any:
        pred = ops.argmax(output, axis=-1)
        return ops.mean(ops.cast(ops.equal(pred, ops.cast(target, pred.dtype)), "float32"))

    def predict_episode(self, support_x: Any, support_y: Any, query_x: Any) -> Any:
        return ops.argmax(self((support_x, support_y, query_x), training=False), axis=1)

    def get_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ToyNet:
        return cls(config)


def build(config: ToyConfig, seed: int | None = None) -> ToyNet:
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = ToyNet(config)
    model.build()
    return model
