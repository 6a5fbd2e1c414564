"""PyTorch evaluation: numpy-in/numpy-out views of a model for the shared evaluator.

Mirror of ``metalearn_tf/evaluate.py``; the protocol (episodes, CI, per-instance accuracy,
one-shot runs) is :mod:`metalearn_shared.evaluation`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_shared import evaluation as E
from metalearn_shared import training as T
from metalearn_shared.predict import ClassScores
from metalearn_torch.checkpoint import load_checkpoint
from metalearn_torch.models import memory_format, use_memory_format
from metalearn_torch.models.backbones import inference

__all__ = ["adapted_scores", "class_scores", "model_fns", "evaluate_model", "main_eval",
           "tuning_objective"]


def class_scores(model: nn.Module) -> ClassScores:
    """``(support_x, support_y, query_x, ways) -> (Q, ways)`` scores of ``model``, eval mode.

    Prototype models score each class by their logits; pair models (with
    ``support_scores``) by the query's best match among the class's support images.
    """
    device = next(model.parameters()).device

    def scores(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        s, y, q = (torch.as_tensor(a, device=device) for a in (sx, sy, qx))
        with inference(model):
            if not hasattr(model, "support_scores"):
                return model(s, y, q, ways).cpu().numpy()  # (Q, N) logits
            per_image = model.support_scores(model.embed(s), model.embed(q))  # (Q, S)
            out = torch.full((q.shape[0], ways), -torch.inf, device=device)
            return out.scatter_reduce(1, y.expand_as(per_image), per_image, "amax").cpu().numpy()

    return scores


def tuning_objective(model: nn.Module, episode: Any, trial: Any,
                     entropy: float) -> Callable[[], Tensor]:
    """``() -> loss``: :meth:`metalearn_shared.evaluation.FineTuning.objective` of the model
    as it is when called — its loss on ``episode`` plus ``entropy`` times the mean entropy
    of its predictions for ``trial``'s queries; in the module's mode (``adapted_scores``
    sets eval mode)."""
    loss_fn = model.make_loss()
    inputs, target = model.inputs_and_target(episode)
    trial_inputs, _ = model.inputs_and_target(trial)

    def objective() -> Tensor:
        loss = loss_fn(model(*inputs), target)
        if entropy:
            logp = F.log_softmax(model(*trial_inputs), dim=-1)
            loss = loss + entropy * -(logp.exp() * logp).sum(-1).mean()
        return loss

    return objective


def adapted_scores(model: nn.Module) -> Callable[..., np.ndarray]:
    """:attr:`~metalearn_shared.evaluation.ModelFns.adapted_scores` of a few-shot model:
    plain SGD on :func:`tuning_objective`, in eval mode (BatchNorm on its running
    statistics, as Keras' ``training=False``), then the trial's class scores; the weights
    are restored in place afterwards, whatever happens."""
    score = class_scores(model)

    def adapted(episode: Any, trial: Any, steps: int, lr: float, entropy: float) -> np.ndarray:
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        was_training = model.training
        model.eval()
        try:
            objective = tuning_objective(model, episode, trial, entropy)
            for _ in range(steps):
                grads = torch.autograd.grad(objective(), params)
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        p.sub_(g, alpha=lr)
            return score(trial.support_x, trial.support_y, trial.query_x, len(trial.classes))
        finally:
            with torch.no_grad():
                for p, w in zip(params, saved, strict=True):
                    p.copy_(w)
            model.train(was_training)

    return adapted


def model_fns(model: nn.Module) -> E.ModelFns:
    """The numpy functions :class:`~metalearn_shared.evaluation.ModelFns` needs."""
    device = next(model.parameters()).device

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=device)

    def predict(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        return model.predict_episode(sx, sy, qx).cpu().numpy()

    def scores(test: np.ndarray, train: np.ndarray) -> np.ndarray:
        with inference(model):
            return model.one_shot_scores(t(train), t(test)).cpu().numpy()

    def logits(x: np.ndarray, prev_label: np.ndarray) -> np.ndarray:
        with inference(model):
            return model(t(x), t(prev_label)).cpu().numpy()

    return E.ModelFns(predict=predict, logits=logits,
                      scores=scores if hasattr(model, "one_shot_scores") else None,
                      class_scores=class_scores(model) if hasattr(model, "predict_episode") else None,
                      adapted_scores=adapted_scores(model) if E.tunable(model.config.model) else None)


def evaluate_model(model: nn.Module, setup: T.TrainSetup, episodes: int,
                   out: Any = None) -> dict[str, Any]:
    """Accuracy ± 95% CI of ``model`` on ``setup``'s held-out classes."""
    return E.evaluate(model_fns(model), setup, episodes, out, label=f"{model.config.model} (torch)")


def _load(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's model in the memory format its eager step prefers (as the trainer)."""
    model, meta = load_checkpoint(path)
    return use_memory_format(model, memory_format(model)), meta


def main_eval(args: Any) -> int:
    """``metalearn eval --framework torch CHECKPOINT``."""
    return E.main_eval(args, "torch", _load, model_fns)
