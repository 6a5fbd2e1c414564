"""Keras: a .keras zip holds config + weights; safe_mode=True refuses serialised lambdas."""
import os
import tempfile

import keras

model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: 2 * x)])
path = os.path.join(tempfile.mkdtemp(), "model.keras")
model.save(path)
try:
    keras.saving.load_model(path)  # safe_mode=True by default
    print("lambda_refused = 0")
except ValueError:  # "...deserialization of a `Lambda` layer ... safe_mode=False"
    print("lambda_refused = 1")
loaded = keras.saving.load_model(path, safe_mode=False)  # the opt-out: runs the file's code
print(f"loaded_with_opt_out = {len(loaded.layers)}")
# expect: lambda_refused in [1, 1]
# expect: loaded_with_opt_out in [1, 1]
