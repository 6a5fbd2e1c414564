"""PyTorch: BCELoss takes probabilities, BCEWithLogitsLoss logits; (input, target) order."""
import torch

z = torch.tensor([-200.0, -30.0], requires_grad=True)  # logits of two "same" pairs
y = torch.ones(2)  # label 1: the exact loss is softplus(-z) = 200, 30
exact = torch.nn.BCEWithLogitsLoss(reduction="none")(z, y)
probs = torch.nn.BCELoss(reduction="none")(torch.sigmoid(z), y)  # log clamped at -100
(grad,) = torch.autograd.grad(probs.sum(), z)
print(f"with_logits_loss = {exact[0].item():.4g}")
print(f"from_probabilities_loss = {probs[0].item():.4g}")
print(f"grad_at_z_minus_30 = {grad[1].item():.3g}")
# expect: with_logits_loss in [200, 200]
# expect: from_probabilities_loss in [100, 100]
# expect: grad_at_z_minus_30 in [-0.1, -0.09]  (the exact gradient is -1)
