"""Keras: BinaryCrossentropy takes probabilities unless from_logits=True; (y_true, y_pred)."""
import keras
import numpy as np
import tensorflow as tf  # for the gradient only

z = tf.constant([[-200.0], [-30.0]])  # logits of two "same" pairs; exact loss 200, 30
y = np.ones((2, 1), "float32")
exact = keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)(y, z)
bce = keras.losses.BinaryCrossentropy(reduction=None)  # probabilities clipped to [1e-7, 1 - 1e-7]
with tf.GradientTape() as tape:
    tape.watch(z)
    probs = bce(y, tf.sigmoid(z))  # an eager tf.sigmoid: a plain probability
print(f"with_logits_loss = {float(exact[0]):.4g}")
print(f"from_probabilities_loss = {float(probs[0]):.4g}")
print(f"grad_at_z_minus_30 = {float(tape.gradient(probs, z)[1, 0]):.3g}")  # clipped
sigmoid_output = keras.layers.Activation("sigmoid")(z)  # TF backend: remembers its logits
print(f"from_sigmoid_layer_loss = {float(bce(y, sigmoid_output)[0]):.4g}")
# expect: with_logits_loss in [200, 200]
# expect: from_probabilities_loss in [16.1, 16.2]
# expect: grad_at_z_minus_30 in [0, 0]  (the exact gradient is -1)
# expect: from_sigmoid_layer_loss in [200, 200]  (TensorFlow backend only; 16.1 on torch, jax)
