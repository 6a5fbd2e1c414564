"""Keras: set_random_seed seeds Python, numpy and the backend; initialisers also take seed=."""
import keras
import numpy as np


def kernel(**kwargs):
    dense = keras.layers.Dense(64, **kwargs)
    dense.build((None, 64))
    return keras.ops.convert_to_numpy(dense.kernel)

keras.utils.set_random_seed(0)  # global, like torch.manual_seed
a = kernel()
keras.utils.set_random_seed(0)
print(f"same_seed_twice_max_abs = {np.abs(kernel() - a).max():.3g}")
seeded = keras.initializers.GlorotUniform(seed=1)  # a seeded initialiser: no global state
b = kernel(kernel_initializer=seeded)
keras.utils.set_random_seed(123)
print(f"initializer_seed_ignores_global = {np.abs(kernel(kernel_initializer=seeded) - b).max():.3g}")
x = np.random.default_rng(0).normal(size=(64, 16, 14, 14)).astype("float32")
print(f"sum_twice_max_abs = {float(keras.ops.sum(x) - keras.ops.sum(x)):.3g}")
# expect: same_seed_twice_max_abs in [0, 0]
# expect: initializer_seed_ignores_global in [0, 0]
# expect: sum_twice_max_abs in [0, 0]
