"""Keras: weight_decay is decoupled in every optimiser; clipnorm is per variable; lr inside."""
import keras
import numpy as np


def weights(*grads):
    return [keras.Variable(np.ones(1, "float32")) for _ in grads], [np.array([g], "float32") for g in grads]

w, g = weights(0.0)
keras.optimizers.Adam(1e-3, weight_decay=0.1).apply(g, w)  # w -= lr * 0.1 w, as AdamW
print(f"adam_weight_decay_step = {1 - float(w[0].numpy()[0]):.3g}")
for name, kwargs in (("clipnorm", {"clipnorm": 1.0}), ("global_clipnorm", {"global_clipnorm": 1.0})):
    w, g = weights(3.0, 4.0)
    keras.optimizers.SGD(1.0, **kwargs).apply(g, w)  # with lr 1 the step is the clipped grad
    print(f"{name}_grad_a = {1 - float(w[0].numpy()[0]):.3g}")
w, g = weights(1.0)
sgd = keras.optimizers.SGD(1.0, momentum=0.9)  # v = 0.9 v - lr g; w += v
sgd.apply(g, w)
sgd.learning_rate = 0.0  # a schedule sets the learning rate to 0
before = float(w[0].numpy()[0])
sgd.apply([np.zeros(1, "float32")], w)
print(f"momentum_move_at_lr_0 = {before - float(w[0].numpy()[0]):.3g}")
# expect: adam_weight_decay_step in [1e-4, 1e-4]
# expect: clipnorm_grad_a in [1, 1]
# expect: global_clipnorm_grad_a in [0.6, 0.6]
# expect: momentum_move_at_lr_0 in [0.9, 0.9]
