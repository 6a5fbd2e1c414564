"""PyTorch: .grad accumulates; detach() cuts the graph; create_graph=True for second order."""
import torch

w = torch.tensor(2.0, requires_grad=True)
for _ in range(2):  # two steps, no zero_grad() in between
    (w**3).backward()
print(f"grad_after_two_backwards = {w.grad.item():.4g}")  # 2 * 3w^2 = 24, not 12
(g,) = torch.autograd.grad(w**3, w, create_graph=True)  # g = 3w^2, itself differentiable
(h,) = torch.autograd.grad(g, w)
print(f"second_derivative = {h.item():.4g}")  # 6w = 12
(g,) = torch.autograd.grad(w**3, w)  # create_graph forgotten: g is a constant
print(f"forgotten_create_graph_differentiable = {int(g.requires_grad)}")
(d,) = torch.autograd.grad(w * w.detach(), w)  # one factor treated as a constant
print(f"grad_through_detach = {d.item():.4g}")
# expect: grad_after_two_backwards in [24, 24]
# expect: second_derivative in [12, 12]
# expect: forgotten_create_graph_differentiable in [0, 0]
# expect: grad_through_detach in [2, 2]
