"""PyTorch: cross_entropy takes logits, classes on axis 1; class weights give a weighted mean."""
import torch
import torch.nn.functional as F

logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])  # (B, C): classes on axis 1
target = torch.tensor([0, 0, 1])  # class indices
w = torch.tensor([1.0, 3.0])  # class weights
per_example = F.cross_entropy(logits, target, reduction="none")
weighted = F.cross_entropy(logits, target, weight=w)  # sum(w[y] * loss) / sum(w[y])
over_batch = (w[target] * per_example).sum() / len(target)  # what Keras divides by
print(f"plain_mean = {per_example.mean().item():.4f}")
print(f"class_weighted = {weighted.item():.4f}")
print(f"keras_style_weighted = {over_batch.item():.4f}")
print(f"softmax_fed_twice = {F.cross_entropy(logits.softmax(1), target).item():.4f}")
# expect: plain_mean in [1.4602, 1.4604]
# expect: class_weighted in [1.7268, 1.727]
# expect: keras_style_weighted in [2.8781, 2.8783]
# expect: softmax_fed_twice in [0.8908, 0.891]
