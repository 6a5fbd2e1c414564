"""Keras (TensorFlow backend): placement is automatic; tf.device is a request, not an order."""
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

print(f"gpus_visible = {len(tf.config.list_physical_devices('GPU'))}")  # ops go to GPU:0 if any
with tf.device("/GPU:0"):  # keras.device("gpu:0") alike; soft placement: no error without one
    y = tf.ones(2) * 2
print(f"gpu_request_ran_on_cpu = {int(y.device.endswith('CPU:0'))}")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization()])
print(f"count_params = {model.count_params()}")  # moving mean and variance included
print(f"trainable_count = {sum(int(np.prod(w.shape)) for w in model.trainable_weights)}")
path = os.path.join(tempfile.mkdtemp(), "exported")
model.export(path, verbose=False)  # a SavedModel; tf.saved_model.load(path).serve(x) runs it
print(f"saved_model_written = {int(os.path.exists(os.path.join(path, 'saved_model.pb')))}")
# expect: gpus_visible in [0, 0]  (the project's CPU machine)
# expect: gpu_request_ran_on_cpu in [1, 1]  (no GPU visible)
# expect: count_params in [72, 72]
# expect: trainable_count in [56, 56]
# expect: saved_model_written in [1, 1]  (TensorFlow backend only)
