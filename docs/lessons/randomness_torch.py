"""PyTorch: one global generator per device; fork_rng scopes it; threads may reorder sums."""
import torch


def weights(seed):
    torch.manual_seed(seed)  # global: every later draw in the process depends on it
    return torch.nn.Linear(64, 64).weight.detach()

print(f"same_seed_twice_max_abs = {(weights(0) - weights(0)).abs().max().item():.3g}")
torch.manual_seed(1)
expected = torch.rand(1)
torch.manual_seed(1)
with torch.random.fork_rng():  # the draws inside leave the global generator where it was
    weights(0)
print(f"fork_rng_leaves_global = {int(torch.equal(torch.rand(1), expected))}")
x = torch.randn(64, 16, 14, 14, requires_grad=True)
torch.set_num_threads(1)
one = torch.autograd.grad(torch.nn.functional.conv2d(x, torch.ones(8, 16, 3, 3)).sum(), x)[0]
torch.set_num_threads(2)
two = torch.autograd.grad(torch.nn.functional.conv2d(x, torch.ones(8, 16, 3, 3)).sum(), x)[0]
print(f"threads_1_vs_2_max_abs = {(one - two).abs().max().item():.3g}")
# expect: same_seed_twice_max_abs in [0, 0]
# expect: fork_rng_leaves_global in [1, 1]
# expect: threads_1_vs_2_max_abs in [0, 1e-3]  (depends on the CPU and the torch build)
