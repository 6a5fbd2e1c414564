"""TensorFlow: tf.function traces once per input signature; Python values are part of it."""
import tensorflow as tf

traces = 0

@tf.function
def scale(x, k):
    global traces
    traces += 1  # Python code runs only while tracing
    return x * k

for k in (1, 2, 3):  # a Python int: a new trace for every value
    scale(tf.ones(2), k)
print(f"traces_for_three_ints = {traces}")
for k in (1, 2, 3):  # a tensor: one trace for the dtype and shape
    scale(tf.ones(2), tf.constant(float(k)))
print(f"traces_for_three_tensors = {traces - 3}")
# expect: traces_for_three_ints in [3, 3]
# expect: traces_for_three_tensors in [1, 1]
