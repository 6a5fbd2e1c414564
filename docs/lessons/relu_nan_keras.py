"""Keras (TensorFlow backend): relu(NaN) is NaN too; its gradient at NaN is 0."""
import keras
import numpy as np
import tensorflow as tf

x = tf.Variable([np.nan, -1.0, 2.0])
with tf.GradientTape() as tape:
    y = keras.ops.relu(x)  # tf.nn.relu; graph, XLA and fused MatMul/Conv+Relu alike
    loss = tf.reduce_sum(y)
print(f"relu_nan_is_nan = {int(np.isnan(y.numpy()[0]))}")
print(f"grad_at_nan = {tape.gradient(loss, x).numpy()[0]:.3g}")  # ReluGrad: zero unless x > 0
print(f"loss_with_nan_is_nan = {int(np.isnan(loss.numpy()))}")
# expect: relu_nan_is_nan in [1, 1]
# expect: grad_at_nan in [0, 0]  (TensorFlow backend)
# expect: loss_with_nan_is_nan in [1, 1]
