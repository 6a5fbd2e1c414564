"""PyTorch: Adam adds eps to sqrt(v_hat); RMSprop: alpha 0.99, eps outside the root."""
import torch


def first_step(make, grad):
    w = torch.zeros(1, requires_grad=True)
    opt = make([w])
    w.grad = torch.tensor([grad])
    opt.step()
    return -w.item()  # how far the first step moved the weight

for size, g in (("normal", 1.0), ("tiny", 1e-8)):  # a normal and a tiny gradient, lr 1e-3 in all four
    print(f"adam_step_{size}_grad = {first_step(lambda p: torch.optim.Adam(p, lr=1e-3), g):.3g}")
    rms = first_step(lambda p: torch.optim.RMSprop(p, lr=1e-3), g)  # g / (sqrt(0.01 g^2) + 1e-8)
    print(f"rmsprop_step_{size}_grad = {rms:.3g}")
# expect: adam_step_normal_grad in [1e-3, 1e-3]
# expect: rmsprop_step_normal_grad in [0.01, 0.01]
# expect: adam_step_tiny_grad in [5e-4, 5e-4]
# expect: rmsprop_step_tiny_grad in [9.09e-4, 9.1e-4]
