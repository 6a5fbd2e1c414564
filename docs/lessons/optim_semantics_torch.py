"""PyTorch: Adam's weight_decay is L2 in the gradient; clip_grad_norm_ is global; lr outside."""
import torch


def weights(*grads):
    w = [torch.ones(1, requires_grad=True) for _ in grads]
    for p, g in zip(w, grads, strict=True):
        p.grad = torch.tensor([g])
    return w

for name, opt in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
    w = weights(0.0)
    opt(w, lr=1e-3, weight_decay=0.1).step()  # Adam: g + 0.1 w, normalised; AdamW: w -= lr 0.1 w
    print(f"{name}_weight_decay_step = {1 - w[0].item():.3g}")
w = weights(3.0, 4.0)
torch.nn.utils.clip_grad_norm_(w, 1.0)  # one norm over all parameters: 5 -> 1
print(f"clipped_grad_a = {w[0].grad.item():.3g}")
w = weights(1.0)
sgd = torch.optim.SGD(w, lr=1.0, momentum=0.9)  # buf = 0.9 buf + g; w -= lr * buf
sgd.step()
sgd.param_groups[0]["lr"], w[0].grad = 0.0, torch.zeros(1)  # a schedule sets lr to 0
before = w[0].item()
sgd.step()
print(f"momentum_move_at_lr_0 = {before - w[0].item():.3g}")
# expect: adam_weight_decay_step in [1e-3, 1e-3]
# expect: adamw_weight_decay_step in [1e-4, 1e-4]
# expect: clipped_grad_a in [0.6, 0.6]
# expect: momentum_move_at_lr_0 in [0, 0]
