"""Keras: BatchNormalization keeps momentum * old, epsilon 1e-3 and the biased variance."""
import keras
import numpy as np

x = np.arange(8.0, dtype="float32").reshape(8, 1, 1, 1)  # variance 5.25 biased, 6.0 unbiased
for name, momentum in [("moving_var", 0.99), ("moving_var_torch_momentum_given", 0.1),
                       ("moving_var_converted", 0.9)]:  # converted: 1 - torch's 0.1
    bn = keras.layers.BatchNormalization(momentum=momentum)  # moving = m * moving + (1 - m) * batch
    bn(x, training=True)
    print(f"{name} = {float(bn.moving_variance[0]):.4g}")
print(f"epsilon = {keras.layers.BatchNormalization().epsilon:.0e}")
# expect: moving_var in [1.042, 1.043]
# expect: moving_var_torch_momentum_given in [4.825, 4.825]
# expect: moving_var_converted in [1.425, 1.425]
# expect: epsilon in [1e-3, 1e-3]
