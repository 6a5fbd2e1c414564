"""Keras: channels_last is the default data_format, not a constraint; Flatten follows it."""
import keras
import numpy as np

x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype("float32")  # (B, H, W, C)
conv, dense = keras.layers.Conv2D(3, 3, padding="same"), keras.layers.Dense(2)
y = dense(keras.layers.Flatten()(conv(x)))  # Dense.kernel is (in, out), rows in (H, W, C)
nchw = np.transpose(conv(x), (0, 3, 1, 2))  # the same map as a channels_first model has it
forgotten = dense(keras.layers.Flatten()(nchw))  # flattened in (C, H, W) order
handled = dense(keras.layers.Flatten(data_format="channels_first")(nchw))  # (H, W, C) order
print(f"flatten_forgotten_max_abs = {np.abs(forgotten - y).max():.3g}")
print(f"flatten_handled_max_abs = {np.abs(handled - y).max():.3g}")
try:  # a channels_first convolution: fine on the torch and jax backends, not on TF's CPU
    keras.layers.Conv2D(3, 3, data_format="channels_first")(nchw)
    print("channels_first_conv_fails = 0")
except Exception:  # tensorflow UnimplementedError
    print("channels_first_conv_fails = 1")
# expect: flatten_forgotten_max_abs in [0.05, 5]
# expect: flatten_handled_max_abs in [0, 1e-6]
# expect: channels_first_conv_fails in [1, 1]  (TensorFlow backend, CPU only)
