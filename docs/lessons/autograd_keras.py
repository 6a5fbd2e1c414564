"""TensorFlow: a tape records only inside its block; gradients are returned, never summed."""
import tensorflow as tf

w = tf.Variable(2.0)
for _ in range(2):  # nothing accumulates between tapes: accumulate yourself if you mean to
    with tf.GradientTape() as tape:
        y = w**3
    g = tape.gradient(y, w)
print(f"grad_after_two_tapes = {float(g):.4g}")
with tf.GradientTape() as outer:  # second order: a tape around the tape
    with tf.GradientTape() as inner:
        y = w**3
    g = inner.gradient(y, w)  # recorded by outer
print(f"second_derivative = {float(outer.gradient(g, w)):.4g}")
with tf.GradientTape() as late:  # opened after g was computed: it has recorded nothing
    pass
print(f"forgotten_outer_tape_is_none = {int(late.gradient(g * 1, w) is None)}")
with tf.GradientTape() as tape:
    y = w * tf.stop_gradient(w)  # one factor treated as a constant
print(f"grad_through_stop_gradient = {float(tape.gradient(y, w)):.4g}")
# expect: grad_after_two_tapes in [12, 12]
# expect: second_derivative in [12, 12]
# expect: forgotten_outer_tape_is_none in [1, 1]
# expect: grad_through_stop_gradient in [2, 2]
