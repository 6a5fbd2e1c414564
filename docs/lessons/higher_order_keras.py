"""Keras: a meta-gradient flows only through stateless_call inside nested GradientTapes."""
import keras
import numpy as np
import tensorflow as tf

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
rng = np.random.default_rng(0)
xs, xq = rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(6, 4)).astype("float32")
ys = yq = np.arange(6) % 3
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
weights = [v.value for v in model.trainable_variables]  # the tf.Variables themselves


def meta_grad(second_order: bool) -> np.ndarray:
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(weights)
            support = ce(ys, model.stateless_call(weights, [], xs)[0])
        grads = inner.gradient(support, weights)
        if not second_order:
            grads = [tf.stop_gradient(g) for g in grads]
        fast = [w - 0.5 * g for w, g in zip(weights, grads, strict=True)]
        query = ce(yq, model.stateless_call(fast, [], xq)[0])
    return outer.gradient(query, weights[0]).numpy()


second, first = meta_grad(True), meta_grad(False)  # handled: MAML and first-order MAML
print(f"second_minus_first_order = {np.abs(second - first).max():.3g}")
copy = keras.models.clone_model(model)  # naive: copy, set_weights(fast weights), query loss
with tf.GradientTape() as tape:
    with tf.GradientTape() as inner:
        support = ce(ys, model(xs))
    fast = [w - 0.5 * g for w, g in zip(weights, inner.gradient(support, weights), strict=True)]
    copy.set_weights([w.numpy() for w in fast])  # numbers leave the tape here
    query = ce(yq, copy(xq))
print(f"set_weights_grad_is_none = {int(tape.gradient(query, weights[0]) is None)}")
# expect: second_minus_first_order in [1e-4, 10]
# expect: set_weights_grad_is_none in [1, 1]  (the copy's variables are not the model's)
