"""PyTorch: DataLoader does not shuffle unless asked; workers=0 loads in the main process."""
import torch
from torch.utils.data import DataLoader

data = list(range(8))
order = [b.tolist() for b in DataLoader(data, batch_size=2)]  # shuffle=False, num_workers=0
print(f"default_batches_out_of_place = {sum(b[0] != 2 * i for i, b in enumerate(order))}")
shuffled = DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0))
first, second = [[b.tolist() for b in shuffled] for _ in range(2)]  # two epochs
print(f"shuffled_epochs_differ = {int(first != second)}")  # one generator, advancing
# expect: default_batches_out_of_place in [0, 0]
# expect: shuffled_epochs_differ in [1, 1]
