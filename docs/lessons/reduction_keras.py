"""Keras: crossentropy takes probabilities unless from_logits=True, classes on the last axis."""
import keras
import numpy as np

logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], "float32")  # (B, C): classes last
target = np.array([0, 0, 1])  # class indices: the Sparse loss; one-hot: CategoricalCrossentropy
sw = np.array([1.0, 1.0, 3.0], "float32")  # class weights {0: 1, 1: 3} as fit applies them
cce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
print(f"plain_mean = {float(cce(target, logits)):.4f}")
print(f"class_weighted = {float(cce(target, logits, sample_weight=sw)):.4f}")  # / batch size
torch_style = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction="mean_with_sample_weight")  # / sum of weights, as torch
print(f"torch_style_weighted = {float(torch_style(target, logits, sample_weight=sw)):.4f}")
default = keras.losses.SparseCategoricalCrossentropy()  # from_logits=False
print(f"logits_as_probabilities = {float(default(target, logits)):.4f}")
# expect: plain_mean in [1.4602, 1.4604]
# expect: class_weighted in [2.8781, 2.8783]
# expect: torch_style_weighted in [1.7268, 1.727]
# expect: logits_as_probabilities in [10.745, 10.746]  (16.118 = -log(1e-7), twice, over 3)
