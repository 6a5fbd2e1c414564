"""PyTorch: autocast picks a dtype per op; GradScaler scales the loss so fp16 grads survive."""
import torch

torch.manual_seed(0)
fc, x = torch.nn.Linear(8, 8), torch.randn(4, 8)
with torch.autocast("cpu", dtype=torch.float16):  # weights stay float32
    y = fc(x)
print(f"output_bits = {torch.finfo(y.dtype).bits}")
print(f"weight_bits = {torch.finfo(fc.weight.dtype).bits}")
(y.float().sum() * 1e-9).backward()  # a small loss: its fp16 gradient underflows to 0
print(f"unscaled_zero_grad_share = {(fc.weight.grad == 0).float().mean().item():.3g}")
fc.zero_grad()
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
with torch.autocast("cpu", dtype=torch.float16):
    y = fc(x)
scaler.scale(y.float().sum() * 1e-9).backward()
scaler.unscale_(torch.optim.SGD(fc.parameters()))  # what scaler.step(opt) does first
print(f"scaled_zero_grad_share = {(fc.weight.grad == 0).float().mean().item():.3g}")
# expect: output_bits in [16, 16]
# expect: weight_bits in [32, 32]
# expect: unscaled_zero_grad_share in [1, 1]
# expect: scaled_zero_grad_share in [0, 0]
