"""PyTorch: BatchNorm2d keeps momentum * new, eps 1e-5 and the unbiased running variance."""
import torch

x = torch.arange(8.0).reshape(8, 1, 1, 1)  # one channel: variance 5.25 biased, 6.0 unbiased
bn = torch.nn.BatchNorm2d(1)  # momentum 0.1: running = 0.9 * running + 0.1 * batch
bn(x)  # training mode: normalise with the batch statistics, update the running ones
print(f"running_var = {bn.running_var.item():.4g}")  # 0.9 * 1 + 0.1 * 6.0
keras_number = torch.nn.BatchNorm2d(1, momentum=0.99)  # Keras' 0.99 given to torch as is
keras_number(x)
print(f"running_var_keras_momentum_given = {keras_number.running_var.item():.4g}")
print(f"eps = {bn.eps:.0e}")
# expect: running_var in [1.5, 1.5]
# expect: running_var_keras_momentum_given in [5.95, 5.95]
# expect: eps in [1e-5, 1e-5]
