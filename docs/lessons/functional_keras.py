"""Keras: Model.stateless_call takes the variables' values and returns the new state."""
import keras
import numpy as np

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
trainable = [v.value * 0.9 for v in model.trainable_variables]  # e.g. fast weights
non_trainable = [v.value for v in model.non_trainable_variables]
out, new_state = model.stateless_call(trainable, non_trainable, x, training=True)
moved = max(float(np.abs(new - old).max()) for new, old in zip(new_state, non_trainable, strict=True))
print(f"returned_state_moved = {moved:.3g}")  # the BatchNorm update, handed back
now = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
print(f"model_state_changed = {max(float(np.abs(a - b).max()) for a, b in zip(now, non_trainable, strict=True)):.3g}")
for variable, value in zip(model.non_trainable_variables, new_state, strict=True):
    variable.assign(value)  # handled: apply the returned state yourself
# expect: returned_state_moved in [1e-3, 10]
# expect: model_state_changed in [0, 0]  (forgotten: the update is lost)
