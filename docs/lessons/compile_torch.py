"""PyTorch: torch.compile guards on Python values and shapes; unsupported code breaks the graph."""
import torch
import torch._dynamo

compiles = 0

def counting_backend(graph, example_inputs):  # counts compilations, runs the graph as is
    global compiles
    compiles += 1
    return graph.forward

scale = torch.compile(lambda x, k: x * k, backend=counting_backend)
for k in (1, 2, 3):  # a Python int: specialised once, then made dynamic
    scale(torch.ones(2), k)
print(f"compiles_for_three_ints = {compiles}")

def branchy(x):
    if x.sum() > 0:  # Python control flow on a tensor's value: the graph breaks here
        x = x + 1
    return x.sin()

print(f"graph_breaks = {torch._dynamo.explain(branchy)(torch.ones(3)).graph_break_count}")
# expect: compiles_for_three_ints in [1, 3]  (2 with torch 2.13: automatic dynamic shapes)
# expect: graph_breaks in [1, 1]
