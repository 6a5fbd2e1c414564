"""Keras: compile + fit run the loop; fit's logs are running means since the epoch began."""
import keras
import numpy as np

x, y = np.array([[1.0], [2.0]], "float32"), np.array([[2.0], [4.0]], "float32")  # y = 2x
models, seen = [], []
for _ in range(2):
    dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
    models.append(keras.Sequential([keras.Input((1,)), dense]))
    models[-1].compile(keras.optimizers.SGD(0.01), "mse", run_eagerly=True)  # default: tf.function
log = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(logs["loss"]))
models[0].fit(x, y, batch_size=1, shuffle=False, verbose=0, callbacks=[log])  # 2 batches of 1
losses = [models[1].train_on_batch(x[i : i + 1], y[i : i + 1]) for i in range(2)]  # a step each
print(f"fit_second_batch_log = {seen[1]:.5g}")  # (4 + 15.37) / 2: the mean since the epoch began
print(f"train_on_batch_second_loss = {losses[1]:.5g}")  # that batch's own loss
kernels = [float(m.layers[0].kernel.numpy()[0, 0]) for m in models]
print(f"weight_fit = {kernels[0]:.5g}\nweight_train_on_batch = {kernels[1]:.5g}")
# expect: fit_second_batch_log in [9.683, 9.6833]
# expect: train_on_batch_second_loss in [15.366, 15.367]
# expect: weight_fit in [0.19679, 0.19681]
# expect: weight_train_on_batch in [0.19679, 0.19681]
