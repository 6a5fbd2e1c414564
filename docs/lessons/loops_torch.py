"""PyTorch: the loop is yours: zero_grad(), backward(), step(); .grad accumulates otherwise."""
import torch

x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[2.0], [4.0]])  # y = 2x
for zero_grad in (True, False):
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        if zero_grad:  # forgotten: the second backward() adds to the first step's gradient
            opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()  # the batch mean; adds into .grad
        opt.step()
    name = "" if zero_grad else "_zero_grad_forgotten"
    print(f"weight_after_two_steps{name} = {model.weight.item():.4g}")
    print(f"last_grad{name} = {model.weight.grad.item():.4g}")
# expect: weight_after_two_steps in [0.1949, 0.1951]
# expect: last_grad in [-9.501, -9.499]
# expect: weight_after_two_steps_zero_grad_forgotten in [0.2949, 0.2951]
# expect: last_grad_zero_grad_forgotten in [-19.51, -19.49]  (-9.5 plus the first step's -10)
