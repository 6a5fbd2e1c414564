"""Keras: LSTMCell — gates i, f, c, o; one bias, forget block at 1; Glorot and orthogonal."""
import keras
import numpy as np

keras.utils.set_random_seed(0)
cell = keras.layers.LSTMCell(32)  # kernel (I, 4U), recurrent_kernel (U, 4U), bias (4U,)
cell.build((None, 16))
bias = keras.ops.convert_to_numpy(cell.bias)
print(f"forget_bias_mean = {bias[32:64].mean():.3g}")  # unit_forget_bias=True
rec = keras.ops.convert_to_numpy(cell.recurrent_kernel)  # (32, 128), orthogonal
print(f"recurrent_kernel_std = {rec.std():.3g}")
print(f"recurrent_orthogonality_error = {np.abs(rec @ rec.T - np.eye(32)).max():.2g}")
# expect: forget_bias_mean in [1, 1]
# expect: recurrent_kernel_std in [0.085, 0.09]
# expect: recurrent_orthogonality_error in [0, 1e-5]
