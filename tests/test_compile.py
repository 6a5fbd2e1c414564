"""``torch.compile``: the region the torch trainer compiles is one graph, for every model.

The trainer (``metalearn_torch/train.py``) compiles a model's ``forward`` — for a
recurrent model, the whole unrolled episode — unless the model says it is not
compilable (``compilable = False``, with ``not_compiled_because``: the MAML family). A graph
break there (a host sync such as ``.item()`` / ``int(tensor)``, Python control flow on a
tensor's value) splits the step into several graphs with eager code between them; here
every registered model's tiny parity cases are traced with ``fullgraph=True``, so a break
fails the test with Dynamo's message naming the line.

For a non-recurrent model the compiled region is forward + loss (what the benchmarks
compile; the trainer compiles ``forward`` alone, a part of it). The backend
(``CompileCounter``) counts the graphs it is given and runs them eagerly — Dynamo tracing
only, no inductor code generation; output, loss and gradients must equal eager autograd's,
and a second step must trace nothing new (no recompiles in steady state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch._dynamo.testing import CompileCounter  # noqa: E402

from metalearn_shared import parity  # noqa: E402
from metalearn_shared.tolerances import assert_close, assert_close_scaled  # noqa: E402
from metalearn_shared.training import step_batch  # noqa: E402
from metalearn_torch.models import build_model  # noqa: E402

CASES = parity.cases(tiny=True)


def _compilable(case: parity.Case) -> bool:
    return getattr(build_model(case.config), "compilable", True)


COMPILED = [c for c in CASES if _compilable(c)]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # one case's graphs and recompile counts must not reach the next
    yield
    torch._dynamo.reset()


def test_every_model_is_compiled_or_says_why():
    """A model left out of the trainer's compile (and of this file) names its reason."""
    assert COMPILED, "no registered torch model is compilable: this file would test nothing"
    for case in CASES:
        model = build_model(case.config)
        if not getattr(model, "compilable", True):
            assert model.not_compiled_because, f"{case.name}: compilable = False needs a reason"


def _trainer_step(model: Any, case: parity.Case, backend: CompileCounter | None = None
                  ) -> Callable[[int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """``step(k)``: output, loss and gradients of a training step on batch ``k`` of the
    case's sampler. With ``backend``, the trainer's region is compiled with it,
    ``fullgraph=True``: forward + loss (a recurrent model's whole episode)."""
    sampler = parity.sampler_for(case, seed=0)
    loss_fn = model.make_loss()

    def forward_loss(target: Any, *inputs: Any) -> tuple[Any, Any]:
        output = model(*inputs)
        return output, loss_fn(output, target)

    if backend is not None:
        forward_loss = torch.compile(forward_loss, backend=backend, fullgraph=True)
    model.train()

    def step(k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        inputs, target = model.inputs_and_target(step_batch(sampler, case.family, k, case.batch))
        model.zero_grad(set_to_none=True)
        output, loss = forward_loss(target, *inputs)
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()
                 if p.grad is not None}
        return output.detach().numpy(), loss.detach().numpy(), grads

    return step


@pytest.mark.parametrize("case", COMPILED, ids=[c.name for c in COMPILED])
def test_compiled_step_is_one_graph_and_equals_eager(case):
    eager_out, eager_loss, eager_grads = _trainer_step(build_model(case.config, seed=0), case)(0)
    counter = CompileCounter()  # the eager backend, counting the graphs it is given
    step = _trainer_step(build_model(case.config, seed=0), case, counter)
    out, loss, grads = step(0)  # fullgraph=True: a graph break raises here, naming the line
    assert_close_scaled(out, eager_out, "forward", what=f"{case.name} compiled vs eager output")
    assert_close(loss, eager_loss, "loss", what=f"{case.name} compiled vs eager loss")
    assert set(grads) == set(eager_grads)
    for name, g in grads.items():
        assert_close_scaled(g, eager_grads[name], "grad", what=f"{case.name} compiled vs eager {name}")
    # The next step (another episode, the same shapes) runs the graphs traced already.
    traced = counter.frame_count
    step(1)
    assert counter.frame_count == traced, f"{case.name}: step 1 traced again (a recompile)"
