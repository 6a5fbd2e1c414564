"""PyTorch: torch.load refuses arbitrary pickled objects by default (weights_only=True, 2.6+)."""
import io

import torch


class Config:  # any class that is not a tensor, dict, list or number
    lr = 0.1

buffer = io.BytesIO()
torch.save({"weights": torch.nn.Linear(2, 2).state_dict(), "config": Config()}, buffer)
buffer.seek(0)
try:
    torch.load(buffer)  # weights_only=True: only tensors and plain containers
    print("custom_object_refused = 0")
except Exception:  # pickle.UnpicklingError naming the class to allow-list
    print("custom_object_refused = 1")
buffer.seek(0)
state = torch.load(buffer, weights_only=False)  # the opt-out: unpickling runs the file's code
print(f"loaded_with_opt_out = {len(state)}")
# expect: custom_object_refused in [1, 1]
# expect: loaded_with_opt_out in [2, 2]
