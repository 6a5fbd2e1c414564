"""PyTorch: relu(NaN) is NaN; its gradient at NaN passes the incoming gradient through."""
import torch

x = torch.tensor([float("nan"), -1.0, 2.0], requires_grad=True)
y = torch.relu(x)
print(f"relu_nan_is_nan = {int(torch.isnan(y[0]).item())}")
y.sum().backward()  # threshold_backward: zero only where x <= 0, and NaN <= 0 is False
print(f"grad_at_nan = {x.grad[0].item():.3g}")
print(f"loss_with_nan_is_nan = {int(torch.isnan(y.sum()).item())}")
# expect: relu_nan_is_nan in [1, 1]
# expect: grad_at_nan in [1, 1]
# expect: loss_with_nan_is_nan in [1, 1]
