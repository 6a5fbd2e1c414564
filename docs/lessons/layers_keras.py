"""Keras: sizes inferred at build; Glorot-uniform kernels, zero biases; 'same' pads at the end."""
import keras
import numpy as np

keras.utils.set_random_seed(0)
dense = keras.layers.Dense(64)  # no input size: the kernel is created by build()
print(f"weights_before_build = {len(dense.weights)}")
dense.build((None, 256))
kernel = keras.ops.convert_to_numpy(dense.kernel)
print(f"dense_kernel_std = {kernel.std():.3g}")  # sqrt(2 / (256 + 64)) = 0.079
print(f"dense_bias_max_abs = {np.abs(keras.ops.convert_to_numpy(dense.bias)).max():.3g}")
conv = keras.layers.Conv2D(1, 3, strides=2, padding="same", use_bias=False, kernel_initializer="ones")
x = np.arange(16.0, dtype="float32").reshape(1, 4, 4, 1)
print(f"stride2_same_first_output = {float(conv(x)[0, 0, 0, 0]):.4g}")  # pads bottom-right
# expect: weights_before_build in [0, 0]
# expect: dense_kernel_std in [0.077, 0.081]
# expect: dense_bias_max_abs in [0, 0]
# expect: stride2_same_first_output in [45, 45]
