"""Keras: no mode to set; a call is inference unless training=True (fit passes it)."""
import keras
import numpy as np

keras.utils.set_random_seed(0)
bn = keras.layers.BatchNormalization()
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), bn, keras.layers.Dropout(0.5)])
x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
before = keras.ops.convert_to_numpy(bn.moving_mean)
inference = model(x)  # training defaults to False: no dropout, no statistics update
print(f"stats_changed_by_call = {np.abs(keras.ops.convert_to_numpy(bn.moving_mean) - before).max():.3g}")
train = model(x, training=True)
print(f"training_vs_default_max_abs = {np.abs(train - inference).max():.3g}")
h = model.layers[0](x)
bn.trainable = False  # for BatchNormalization this also means: run in inference mode
print(f"frozen_bn_training_vs_inference = {np.abs(bn(h, training=True) - bn(h)).max():.3g}")
# expect: stats_changed_by_call in [0, 0]
# expect: training_vs_default_max_abs in [0.1, 100]
# expect: frozen_bn_training_vs_inference in [0, 0]
