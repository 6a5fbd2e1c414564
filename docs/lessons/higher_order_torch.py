"""PyTorch: a meta-gradient flows only through functional weights and create_graph=True."""
import copy

import torch
from torch.func import functional_call

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
xs, ys, xq, yq = torch.randn(6, 4), torch.arange(6) % 3, torch.randn(6, 4), torch.arange(6) % 3
ce = torch.nn.functional.cross_entropy
params = dict(model.named_parameters())


def meta_grad(create_graph: bool) -> torch.Tensor:
    grads = torch.autograd.grad(ce(model(xs), ys), params.values(), create_graph=create_graph)
    fast = {k: p - 0.5 * g for (k, p), g in zip(params.items(), grads, strict=True)}
    return torch.autograd.grad(ce(functional_call(model, fast, xq), yq), model[0].weight)[0]


second, first = meta_grad(True), meta_grad(False)  # handled: MAML and first-order MAML
print(f"second_minus_first_order = {(second - first).abs().max().item():.3g}")
copied = copy.deepcopy(model)  # naive: adapt a copy in place, then take the query loss
step = torch.autograd.grad(ce(copied(xs), ys), list(copied.parameters()))
with torch.no_grad():
    for p, g in zip(copied.parameters(), step, strict=True):
        p -= 0.5 * g
copied_loss = ce(copied(xq), yq)
unused = torch.autograd.grad(copied_loss, model[0].weight, allow_unused=True)[0]
print(f"copy_grad_is_none = {int(unused is None)}")
try:  # naive: an in-place step on the leaf parameters themselves
    model[0].weight -= 0.5 * second
    print("in_place_on_leaf_raises = 0")
except RuntimeError:
    print("in_place_on_leaf_raises = 1")
# expect: second_minus_first_order in [1e-4, 10]
# expect: copy_grad_is_none in [1, 1]  (the copy's loss has no path back to model's weights)
# expect: in_place_on_leaf_raises in [1, 1]  (a leaf that requires grad, in place)
