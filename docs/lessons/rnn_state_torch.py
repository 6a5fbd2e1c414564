"""PyTorch: nn.LSTM returns out, (h, c); the state goes back in only if you pass it."""
import torch

torch.manual_seed(0)
lstm = torch.nn.LSTM(2, 3, batch_first=True)  # a cell: nn.LSTMCell(x_t, (h, c)) -> (h, c)
x = torch.randn(1, 6, 2)  # (B, T, I)
out, (h, c) = lstm(x)  # out (B, T, U); h, c (layers, B, U): h first, then c
print(f"last_output_is_h = {(out[:, -1] - h[0]).abs().max().item():.3g}")
first, state = lstm(x[:, :3])
second, _ = lstm(x[:, 3:], state)  # handled: the first chunk's state carried over
print(f"chunks_with_state_max_abs = {(second - out[:, 3:]).abs().max().item():.3g}")
restarted, _ = lstm(x[:, 3:])  # forgotten: state defaults to zeros
print(f"chunks_state_forgotten_max_abs = {(restarted - out[:, 3:]).abs().max().item():.3g}")
swapped, _ = lstm(x[:, 3:], (state[1], state[0]))  # (c, h) instead of (h, c)
print(f"h_c_swapped_max_abs = {(swapped - out[:, 3:]).abs().max().item():.3g}")
# expect: last_output_is_h in [0, 0]
# expect: chunks_with_state_max_abs in [0, 1e-6]
# expect: chunks_state_forgotten_max_abs in [1e-3, 1]
# expect: h_c_swapped_max_abs in [1e-3, 1]
