"""PyTorch: a module starts in training mode; eval() switches Dropout and BatchNorm."""
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
x = torch.randn(8, 4)
before = model[1].running_mean.clone()
forgotten = model(x)  # "inference" without eval(): batch statistics, dropout, a state update
print(f"stats_changed_by_call = {(model[1].running_mean - before).abs().max():.3g}")
model.eval()  # handled; no_grad() only stops recording, it does not change the mode
with torch.no_grad():
    handled, again = model(x), model(x)
print(f"forgotten_vs_eval_max_abs = {(forgotten - handled).abs().max():.3g}")
print(f"eval_repeat_max_abs = {(handled - again).abs().max():.3g}")
# expect: stats_changed_by_call in [1e-3, 10]
# expect: forgotten_vs_eval_max_abs in [0.1, 100]
# expect: eval_repeat_max_abs in [0, 0]
