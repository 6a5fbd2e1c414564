"""Keras: return_state=True returns [out, h, c]; stateful=True carries state until reset."""
import keras
import numpy as np

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(1, 6, 2)).astype("float32")  # (B, T, I)
lstm = keras.layers.RNN(keras.layers.LSTMCell(3), return_sequences=True, return_state=True)
out, h, c = lstm(x)  # the cell's state_size is [units, units]: h first, then c
print(f"last_output_is_h = {float(np.abs(out[:, -1] - h).max()):.3g}")
second, *_ = lstm(x[:, 3:], initial_state=lstm(x[:, :3])[1:])  # handled: state carried over
print(f"chunks_with_state_max_abs = {float(np.abs(second - out[:, 3:]).max()):.3g}")
stateful = keras.layers.LSTM(3, stateful=True)  # keeps h, c between calls (fixed batch size)
episode_1 = stateful(x)
episode_2 = stateful(x)  # forgotten: the next episode starts from the last one's state
print(f"stateful_not_reset_max_abs = {float(np.abs(episode_2 - episode_1).max()):.3g}")
stateful.reset_state()  # handled: between episodes
print(f"after_reset_state_max_abs = {float(np.abs(stateful(x) - episode_1).max()):.3g}")
# expect: last_output_is_h in [0, 0]
# expect: chunks_with_state_max_abs in [0, 1e-6]
# expect: stateful_not_reset_max_abs in [1e-3, 1]
# expect: after_reset_state_max_abs in [0, 0]
