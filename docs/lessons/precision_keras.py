"""Keras: a dtype policy (per layer or global); compile() adds loss scaling for mixed_float16."""
import keras
import numpy as np
import tensorflow as tf  # for the gradient only

keras.utils.set_random_seed(0)
dense = keras.layers.Dense(8, dtype="mixed_float16")  # float16 compute, float32 variables
x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
dense.build(x.shape)
opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())  # what compile() wraps in
opt.build(dense.trainable_variables)  # starts at scale 2**15, adjusted as training goes
for name, scale in (("unscaled", 1.0), ("scaled", float(opt.scale_loss(1.0)))):
    with tf.GradientTape() as tape:
        y = dense(x)
        loss = keras.ops.sum(keras.ops.cast(y, "float32")) * 1e-9 * scale  # a small loss
    grad = tape.gradient(loss, dense.trainable_variables)[0] / scale  # apply() unscales
    print(f"{name}_zero_grad_share = {float(np.mean(keras.ops.convert_to_numpy(grad) == 0)):.3g}")
print(f"output_bits = {np.finfo(keras.backend.standardize_dtype(y.dtype)).bits}")
print(f"variable_bits = {np.finfo(dense.kernel.dtype).bits}")
# expect: unscaled_zero_grad_share in [1, 1]
# expect: scaled_zero_grad_share in [0, 0]
# expect: output_bits in [16, 16]
# expect: variable_bits in [32, 32]
