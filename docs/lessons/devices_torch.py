"""PyTorch: tensors stay on the CPU until .to(device); a device that is not there raises."""
import torch

model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8)).eval()
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model, x = model.to(device), torch.randn(2, 4).to(device)  # the model and its inputs, both
try:  # asking for a GPU without checking
    torch.zeros(2, device="cuda")
    print("gpu_request_refused = 0")
except (AssertionError, RuntimeError):  # CPU build: "Torch not compiled with CUDA enabled"
    print("gpu_request_refused = 1")
print(f"parameter_count = {sum(p.numel() for p in model.parameters())}")  # 4*8 + 8 + 2*8
print(f"state_dict_count = {sum(t.numel() for t in model.state_dict().values())}")  # + buffers
print(f"parameter_bytes = {sum(p.numel() * p.element_size() for p in model.parameters())}")
traced = torch.jit.trace(lambda t: t if t.sum() > 0 else -t, torch.ones(2))  # deprecated in 2.13
print(f"traced_branch_frozen = {int(traced(-torch.ones(2)).sum().item() < 0)}")  # eager: +2
# expect: gpu_request_refused in [1, 1]  (no GPU visible; with one, 0)
# expect: parameter_count in [56, 56]
# expect: state_dict_count in [73, 73]  (+ running mean, variance, num_batches_tracked)
# expect: parameter_bytes in [224, 224]
# expect: traced_branch_frozen in [1, 1]
