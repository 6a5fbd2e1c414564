"""PyTorch: LSTMCell — gates i, f, g, o; two biases; every weight U(-1/sqrt(U), 1/sqrt(U))."""
import torch

torch.manual_seed(0)
cell = torch.nn.LSTMCell(16, 32)  # weight_ih (4U, I), weight_hh (4U, U), bias_ih, bias_hh
forget = slice(32, 64)  # the second block of rows
bias = cell.bias_ih + cell.bias_hh  # the one bias Keras has
print(f"forget_bias_mean = {bias[forget].mean().item():.3g}")
print(f"weight_hh_std = {cell.weight_hh.std().item():.3g}")  # 1/sqrt(3 * 32) = 0.102
x, state = torch.randn(4, 16), (torch.zeros(4, 32), torch.zeros(4, 32))
swapped = torch.nn.LSTMCell(16, 32)  # the same weights, f and g blocks read swapped
order = torch.arange(128).reshape(4, 32)[[0, 2, 1, 3]].flatten()  # i, g, f, o
swapped.load_state_dict({k: v[order] for k, v in cell.state_dict().items()})
print(f"gate_order_forgotten_max_abs = {(swapped(x, state)[0] - cell(x, state)[0]).abs().max():.3g}")
# expect: forget_bias_mean in [-0.1, 0.1]
# expect: weight_hh_std in [0.095, 0.11]
# expect: gate_order_forgotten_max_abs in [0.05, 1]
