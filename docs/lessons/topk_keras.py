"""Keras: ops.top_k is the backend's top-k; TensorFlow's puts the lower index first."""
import keras
import numpy as np

usage = np.zeros(16, "float32")  # every memory slot unused: a complete tie
_, least = keras.ops.top_k(-usage, 3)  # the 3 least-used slots
print(f"top_k_first_slot = {int(least[0])}")  # torch backend: torch.topk's order instead
stable = np.argsort(usage, kind="stable")[:3]  # the rule, backend-independent
print(f"stable_sort_first_slot = {int(stable[0])}")
# expect: top_k_first_slot in [0, 0]  (TensorFlow backend; documented lower index first)
# expect: stable_sort_first_slot in [0, 0]
