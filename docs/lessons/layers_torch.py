"""PyTorch: sizes at construction; Kaiming-uniform(a=sqrt(5)) weights and uniform biases."""
import torch

torch.manual_seed(0)
fc = torch.nn.Linear(256, 64)  # in_features now: the weight exists before any input
print(f"linear_weight_std = {fc.weight.std().item():.3g}")  # 1/sqrt(3 * 256) = 0.036
print(f"linear_bias_max_abs = {fc.bias.abs().max().item():.3g}")  # U(-1/16, 1/16)
conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)  # padding="same" needs stride 1
torch.nn.init.ones_(conv.weight)
x = torch.arange(16.0).reshape(1, 1, 4, 4)
print(f"stride2_pad1_first_output = {conv(x)[0, 0, 0, 0].item():.4g}")  # pads top-left
try:
    torch.nn.Conv2d(1, 1, 3, stride=2, padding="same")
    print("same_with_stride2_refused = 0")
except ValueError:
    print("same_with_stride2_refused = 1")
# expect: linear_weight_std in [0.034, 0.038]
# expect: linear_bias_max_abs in [0.06, 0.0625]
# expect: stride2_pad1_first_output in [10, 10]
# expect: same_with_stride2_refused in [1, 1]
