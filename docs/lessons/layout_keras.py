"""Keras: channels_last is the default data_format, not a constraint; Flatten follows it."""
import os
import subprocess
import sys

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
# A channels_first convolution: the torch and jax backends run it; TensorFlow's own CPU kernel
# is NHWC-only, and only oneDNN's (on by default on many x86 CPUs, not all) accepts NCHW.
code = "import keras, numpy as np; keras.layers.Conv2D(3, 3, data_format='channels_first')" \
       "(np.zeros((1, 1, 4, 4), 'float32'))"
env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "KERAS_BACKEND": "tensorflow"}
run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
print(f"channels_first_conv_fails_without_onednn = {int(run.returncode != 0)}")
# expect: flatten_forgotten_max_abs in [0.05, 5]
# expect: flatten_handled_max_abs in [0, 1e-6]
# expect: channels_first_conv_fails_without_onednn in [1, 1]
