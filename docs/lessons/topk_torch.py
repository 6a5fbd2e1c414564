"""PyTorch: torch.topk does not promise an order among tied values; a stable sort does."""
import torch

usage = torch.zeros(16)  # every memory slot unused: a complete tie
least = torch.topk(usage, 3, largest=False).indices  # the 3 least-used slots
print(f"topk_first_slot = {least[0].item()}")
stable = torch.sort(usage, stable=True).indices[:3]  # the rule: lowest index first
print(f"stable_sort_first_slot = {stable[0].item()}")
# expect: topk_first_slot in [0, 15]  (10 with torch 2.13 on this CPU; not specified)
# expect: stable_sort_first_slot in [0, 0]
