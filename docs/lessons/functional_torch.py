"""PyTorch: torch.func.functional_call runs a module on the tensors you pass (MAML's inner loop)."""
import torch
from torch.func import functional_call

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
x = torch.randn(8, 3)
params = dict(model.named_parameters())
loss = model(x).pow(3).mean()
grads = torch.autograd.grad(loss, params.values(), create_graph=True)  # keep the graph: MAML
fast = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads, strict=True)}  # one inner SGD step
buffers = {k: b.clone() for k, b in model.named_buffers()}
outer = functional_call(model, (fast, buffers), x).pow(3).mean()
(meta_grad,) = torch.autograd.grad(outer, model[0].weight)  # through the inner step
print(f"meta_grad_norm = {meta_grad.norm().item():.3g}")
print(f"passed_buffers_updated = {(buffers['1.running_mean'] - model[1].running_mean).abs().max().item():.3g}")
# expect: meta_grad_norm in [1e-3, 10]
# expect: passed_buffers_updated in [1e-3, 10]  (in place, in the dict you passed)
