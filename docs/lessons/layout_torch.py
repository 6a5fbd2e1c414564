"""PyTorch: NCHW maps, (out, in) kernels, and the flatten before a dense layer."""
import torch

torch.manual_seed(0)
conv, fc = torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Linear(3 * 4 * 4, 2)
x = torch.randn(5, 1, 4, 4)  # (B, C, H, W)
feat = conv(x)  # (B, 3, 4, 4)
y = fc(feat.flatten(1))  # fc.weight is (out, in); its columns are in (C, H, W) order
hwc = feat.permute(0, 2, 3, 1).flatten(1)  # the same features flattened as Keras does
forgotten = hwc @ fc.weight.T + fc.bias  # kernel transposed, columns not permuted
w = fc.weight.reshape(2, 3, 4, 4).permute(0, 2, 3, 1).reshape(2, -1)  # columns -> (H, W, C)
handled = hwc @ w.T + fc.bias
print(f"flatten_forgotten_max_abs = {(forgotten - y).abs().max():.3g}")
print(f"flatten_handled_max_abs = {(handled - y).abs().max():.3g}")
# expect: flatten_forgotten_max_abs in [0.05, 5]
# expect: flatten_handled_max_abs in [0, 1e-6]
