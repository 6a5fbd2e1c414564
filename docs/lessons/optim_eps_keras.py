"""Keras: Adam's epsilon is the paper's epsilon-hat; RMSprop: rho 0.9, epsilon inside the root."""
import keras
import numpy as np


def first_step(opt, grad):
    w = keras.Variable(np.zeros(1, "float32"))
    opt.apply([np.array([grad], "float32")], [w])
    return -float(w.numpy()[0])  # how far the first step moved the weight

for size, g in (("normal", 1.0), ("tiny", 1e-8)):  # a normal and a tiny gradient, learning rate 1e-3 in all four
    print(f"adam_step_{size}_grad = {first_step(keras.optimizers.Adam(1e-3), g):.3g}")
    rms = first_step(keras.optimizers.RMSprop(1e-3), g)  # g / sqrt(0.1 g^2 + 1e-7)
    print(f"rmsprop_step_{size}_grad = {rms:.3g}")
# expect: adam_step_normal_grad in [1e-3, 1e-3]
# expect: rmsprop_step_normal_grad in [3.16e-3, 3.17e-3]
# expect: adam_step_tiny_grad in [3e-6, 3.2e-6]
# expect: rmsprop_step_tiny_grad in [3e-8, 3.2e-8]
