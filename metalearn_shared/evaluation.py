"""Framework-agnostic evaluation driver: both ``evaluate.py`` modules hand it a few
numpy-in/numpy-out functions of their model and get the same report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metalearn_shared import training as T
from metalearn_shared.augment import KochAffine, augment_spec, distort
from metalearn_shared.losses import log_softmax

__all__ = ["PROTOCOLS", "Ensemble", "FineTuning", "Member", "ModelFns", "SupportFineTuning",
           "TestTimeAugmentation", "ensemble", "evaluate", "lake_runs", "main_eval",
           "recorded_data", "resolve_eval_data", "tunable"]

#: ``metalearn eval --protocol``: random episodes of the held-out classes (``--ways``,
#: ``--shots``, ``--queries``), or Lake et al.'s within-alphabet 20-way one-shot trials on
#: the held-out alphabets (:func:`metalearn_shared.training.evaluate_within_alphabet`).
PROTOCOLS = ("episodes", "lake-within-alphabet")


class ModelFns:
    """What evaluation needs of a model, as numpy functions.

    Attributes:
        predict: ``(support_x, support_y, query_x) -> labels (Q,)`` (few-shot models).
        scores: ``(test (Q,H,W), train (K,H,W)) -> (Q, K)``, higher = more similar
            (one-shot runs).
        logits: ``(x (B,T,P), prev_label (B,T,L)) -> (B,T,C)`` (sequence models).
        class_scores: ``(support_x, support_y, query_x, ways) -> (Q, ways)``, higher = more
            likely; their softmax is the model's class probabilities (few-shot and pair
            models; what :func:`ensemble` averages).
        adapted_scores: ``(episode, trial, steps, lr, entropy) -> (Q, ways)``: the class
            scores of ``trial`` (a :class:`FewShotEpisode` whose query labels are unused)
            after ``steps`` steps of plain SGD at ``lr`` on the model's own loss on
            ``episode`` plus ``entropy`` times the mean entropy of its predictions for the
            trial's queries (:meth:`FineTuning.objective`), the model in inference mode
            (BatchNorm on its running statistics); the weights are restored afterwards
            (few-shot models; what :class:`SupportFineTuning` calls).
    """

    def __init__(self, predict: Callable | None = None, scores: Callable | None = None,
                 logits: Callable | None = None, class_scores: Callable | None = None,
                 adapted_scores: Callable | None = None) -> None:
        self.predict, self.scores, self.logits = predict, scores, logits
        self.class_scores, self.adapted_scores = class_scores, adapted_scores


@dataclasses.dataclass(frozen=True)
class Member:
    """One more checkpoint of a ``metalearn eval --ensemble``, loaded by its framework."""

    checkpoint: str
    framework: str
    fns: ModelFns
    meta: dict[str, Any]


def _probabilities(scores: Any) -> np.ndarray:
    """The softmax of class scores ``(Q, ways)``, in float64."""
    return np.exp(log_softmax(np.asarray(scores, np.float64)))


def _needs_class_scores(fns: list[ModelFns], what: str) -> None:
    if not fns or any(m.class_scores is None for m in fns):
        raise ValueError(f"{what} needs few-shot or pair models (they score classes); "
                         "a sequence model (MANN, LSTM) has no class scores.")


class _ScoringModel:
    """A model built on others' class scores (an ensemble, test-time views, fine-tuning):
    it predicts the argmax of its :meth:`class_scores` and is itself a :class:`ModelFns`, so
    such models nest."""

    def class_scores(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        raise NotImplementedError

    def predict(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        return np.argmax(self.class_scores(sx, sy, qx, int(np.max(sy)) + 1), axis=1)

    def fns(self) -> ModelFns:
        return ModelFns(predict=self.predict, class_scores=self.class_scores)


class _MeanProbabilities(_ScoringModel):
    """A model whose class probabilities are the mean of several score tables' softmaxes
    (:meth:`_scores` yields them: an ensemble's members, or augmented views of an episode);
    its class scores are the log of that mean, so such models nest (an ensemble of
    test-time-augmented members)."""

    def _scores(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> Any:
        raise NotImplementedError

    def class_scores(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        """``log`` of the mean class probabilities ``(Q, ways)``."""
        return np.log(np.mean([_probabilities(s) for s in self._scores(sx, sy, qx, ways)], axis=0))


class TestTimeAugmentation(_MeanProbabilities):
    """A model whose class probabilities are the mean over ``views`` versions of each
    episode: the episode itself, and ``views - 1`` copies in which every support and query
    image is distorted by its own draw from ``spec`` (:mod:`metalearn_shared.augment`).

    Each view is a whole episode the model classifies as usual (a ProtoNet builds its
    prototypes from that view's support images). The distortions of the ``i``-th episode
    evaluated are drawn from ``(seed, i)``, so an evaluation is reproducible, and two models
    wrapped with the same seed see the same views (an ensemble's members do).
    """

    __test__ = False  # not a pytest class

    def __init__(self, fns: ModelFns, views: int, spec: KochAffine | None, seed: int = 0) -> None:
        _needs_class_scores([fns], "test-time augmentation (--tta)")
        if views < 1:
            raise ValueError(f"--tta takes the number of views, at least 1 (1 = off); got {views}.")
        if spec is None:
            raise ValueError("test-time augmentation needs a distortion (--tta-augment koch or "
                             "santoro), not none.")
        self.inner, self.views, self.spec, self.seed = fns, views, spec, seed
        self._episodes = 0

    def _scores(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> Any:
        rng = np.random.default_rng((self.seed, self._episodes))
        self._episodes += 1
        yield self.inner.class_scores(sx, sy, qx, ways)
        images = np.concatenate([sx, qx])
        for _ in range(1, self.views):
            view = distort(images, rng, self.spec)
            yield self.inner.class_scores(view[:len(sx)], sy, view[len(sx):], ways)


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """Transductive fine-tuning on a trial's support set (``metalearn eval --finetune``).

    A one-shot trial has one image per class and no labelled query, so the labelled part
    is an episode made from the support set alone: its support images as they are, and as
    queries ``views`` distorted copies of each (``augment``, a :data:`AUGMENTS` name). The
    transductive part (Dhillon et al. 2020) is the trial's unlabelled queries: ``entropy``
    weighs the mean entropy of the model's predictions for them, so the tuning also makes
    the model sure of each real query. The model takes ``steps`` steps of plain SGD at ``lr``
    on :meth:`objective`, in inference mode, then classifies the trial's queries; the
    weights are restored before the next trial.
    """

    steps: int
    lr: float = 1e-3
    views: int = 4
    augment: str = "koch"
    entropy: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.views < 1 or not self.lr > 0 or self.entropy < 0:
            raise ValueError(f"--finetune STEPS >= 0, --finetune-views >= 1, --finetune-lr "
                             f"> 0 and --finetune-entropy >= 0; got {self.steps}, {self.views}, "
                             f"{self.lr} and {self.entropy}.")
        if augment_spec(self.augment) is None:
            raise ValueError("--finetune-augment: the queries are distorted copies of the "
                             "support images, so a distortion is needed (koch, santoro or "
                             "elastic), not none.")

    def episode(self, sx: np.ndarray, sy: np.ndarray, rng: np.random.Generator) -> Any:
        """The episode tuned on: support ``(sx, sy)``; queries ``views`` distortions of each
        support image drawn from ``rng``, class-major like ``sy``."""
        x = np.repeat(np.asarray(sx, np.float32), self.views, axis=0)
        return _episode(sx, sy, distort(x, rng, augment_spec(self.augment)),
                        np.repeat(sy, self.views))

    @staticmethod
    def trial(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> Any:
        """The trial as an episode for a model's inputs; its query labels (0) are unused."""
        return _episode(sx, sy, qx, np.zeros(len(qx), np.int64))

    def objective(self, loss: float, query_logits: np.ndarray) -> float:
        """What the steps descend (the numpy reference): the model's ``loss`` on the tuning
        episode plus ``entropy`` times the mean entropy of ``softmax(query_logits)``."""
        logp = log_softmax(np.asarray(query_logits, np.float64))
        return float(loss + self.entropy * np.mean(-np.sum(np.exp(logp) * logp, axis=-1)))


def _episode(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> Any:
    from metalearn_shared.episodes import FewShotEpisode

    sy = np.asarray(sy, np.int64)
    none = np.full(0, -1, np.int64)
    return FewShotEpisode(np.asarray(sx, np.float32), sy, np.asarray(qx, np.float32), qy,
                          np.arange(int(sy.max()) + 1, dtype=np.int64), none, none)


def tunable(model: str) -> bool:
    """Whether ``--finetune`` applies to the model ``model`` names: a few-shot model with no
    inner loop of its own (ProtoNet). A pair or sequence model has no few-shot loss, and the
    MAML family adapts to the support set itself (its evaluation forward is not built to be
    differentiated again)."""
    from metalearn_shared import models, registry

    spec = models.get(model)
    return spec.family == "fewshot" and registry.INNER_LOOP not in spec.tags


class SupportFineTuning(_ScoringModel):
    """A few-shot model fine-tuned on each trial's support set before it scores the trial
    (:class:`FineTuning`). The distortions of the ``i``-th trial are drawn from ``(seed,
    i)``, so an evaluation is reproducible, and the same weights tuned in PyTorch and in
    Keras see the same episodes."""

    def __init__(self, fns: ModelFns, tuning: FineTuning, seed: int = 0) -> None:
        if fns.adapted_scores is None:
            raise ValueError("--finetune tunes a few-shot model without an inner loop "
                             "(protonet) on each trial's support set; a pair or sequence model "
                             "has no few-shot loss to tune, and the MAML family adapts to the "
                             "support set itself. Leave --finetune out for this model.")
        self.inner, self.tuning, self.seed = fns, tuning, seed
        self._episodes = 0

    def class_scores(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self._episodes))
        self._episodes += 1
        if not self.tuning.steps:
            return self.inner.class_scores(sx, sy, qx, ways)
        t = self.tuning
        return self.inner.adapted_scores(t.episode(sx, sy, rng), t.trial(sx, sy, qx), t.steps,
                                         t.lr, t.entropy)


class Ensemble(_MeanProbabilities):
    """A model whose class probabilities are the mean of ``members``' (each the softmax of
    its ``class_scores``); it predicts their argmax. Members of either framework, and of
    different metric models, combine: only their numpy scores meet here.

    Every member's own prediction (the argmax of its scores) is kept as the ensemble runs,
    so :meth:`member` replays a member's evaluation on the same episodes without running
    the member's model again.
    """

    def __init__(self, members: list[ModelFns]) -> None:
        _needs_class_scores(members, "an ensemble")
        self.members = members
        self._predicted: list[list[np.ndarray]] = [[] for _ in members]

    def _scores(self, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> Any:
        for m, kept in zip(self.members, self._predicted, strict=True):
            scores = np.asarray(m.class_scores(sx, sy, qx, ways), np.float64)
            kept.append(np.argmax(scores, axis=1))
            yield scores

    def member(self, i: int) -> ModelFns:
        """Member ``i``'s predictions of the ensemble's run so far, in order: evaluating
        it with the same setup draws the same episodes and reads them back."""
        kept = iter(self._predicted[i])

        def predict(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
            return next(kept)

        return ModelFns(predict=predict)


def ensemble(members: list[ModelFns]) -> ModelFns:
    """The ensemble of ``members`` as a model (:class:`Ensemble`)."""
    return Ensemble(members).fns()


#: The data keys every ensemble member must share with the first checkpoint: its episodes
#: are drawn once, from alphabets held out from every member. Rotations and reflections
#: add training classes only, so members trained with and without them combine.
_MEMBER_KEYS = ("dataset", "seed", "holdout", "size")


def _check_member(first: dict[str, Any] | None, member: Member) -> None:
    theirs = recorded_data(member.meta, member.checkpoint)
    if first is None or theirs is None:
        raise ValueError(f"--ensemble {member.checkpoint}: "
                         f"{'the first checkpoint' if first is None else 'this checkpoint'} "
                         "records no training data (no metadata, no run.json beside it), so "
                         "its held-out alphabets are unknown; ensemble checkpoints trained by "
                         "metalearn train.")
    for key in _MEMBER_KEYS:
        if key in first and key in theirs and not _same(key, first[key], theirs[key]):
            flag = "--" + key
            raise ValueError(f"--ensemble {member.checkpoint} was trained with {flag} "
                             f"{theirs[key]}, the first checkpoint with {flag} {first[key]}: "
                             "members must share the data and the split, so that the "
                             "evaluation's alphabets are held out from every one of them.")


def evaluate(fns: ModelFns, setup: T.TrainSetup, episodes: int, out: Path | None = None,
             label: str = "", protocol: str = "episodes") -> dict[str, Any]:
    """Evaluate on held-out classes; write ``eval.json`` (and the per-instance PNG) to ``out``.

    ``protocol`` (:data:`PROTOCOLS`): ``episodes`` draws ``episodes`` random episodes of the
    setup's ways/shots/queries; ``lake-within-alphabet`` runs ``episodes`` of Lake's 20-way
    within-alphabet trials instead (few-shot and pair models).
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1; got {episodes}.")
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}; got {protocol!r}.")
    report: dict[str, Any] = {"model": setup.model_config.model, "episodes": episodes,
                              "protocol": protocol,
                              "test_classes": setup.test_data.num_classes,
                              "test_alphabets": list(setup.test_data.alphabets)}
    if protocol == "lake-within-alphabet":
        if setup.family == "sequence":
            raise ValueError(f"--protocol {protocol} classifies images against one training "
                             f"image per class; {setup.model_config.model} is a sequence model "
                             "(use --protocol episodes).")
        report["within_alphabet"] = T.evaluate_within_alphabet(
            fns.predict, setup.test_data, episodes, setup.train.seed)
        report["accuracy"] = report["within_alphabet"]["accuracy"]
    elif setup.family == "sequence":
        per, overall = T.evaluate_sequences(fns.logits, setup.test_data, setup.ways,
                                            setup.samples_per_class, episodes, setup.train.seed)
        report["ways"] = setup.ways
        report["accuracy"] = {"mean": overall.mean, "ci95": overall.ci95}
        report["per_instance"] = {str(k): {"mean": v.mean, "ci95": v.ci95} for k, v in per.items()}
        if out is not None:
            T.plot_per_instance({label or setup.model_config.model: per}, Path(out) / "per_instance.png")
    else:
        acc = T.evaluate_fewshot(fns.predict, setup.test_data, setup.ways, setup.shots,
                                 setup.queries, episodes, setup.train.seed)
        report.update(ways=setup.ways, shots=setup.shots, queries=setup.queries,
                      accuracy={"mean": acc.mean, "ci95": acc.ci95})
    if out is not None:
        T.write_json(Path(out) / "eval.json", report)
    return report


def lake_runs(fns: ModelFns, root: str | Path, size: int) -> dict[str, Any]:
    """The official 20-way one-shot protocol on a folder of runs."""
    from metalearn_shared.data.lake_runs import evaluate_runs

    if fns.scores is None:
        raise ValueError("--lake-runs needs a model that scores test images against training "
                         "images (one_shot_scores); this model has none.")

    def score(test: np.ndarray, train: np.ndarray) -> np.ndarray:
        # The reader gives stroke-high uint8, the samplers' float32 [0, 1] is what models take.
        return np.asarray(fns.scores(test.astype(np.float32) / 255.0, train.astype(np.float32) / 255.0))

    res = evaluate_runs(root, score, kind="score", size=size)
    return {"runs": len(res.errors), "errors": [float(e) for e in res.errors],
            "mean_error": float(res.mean_error)}


#: What ``metalearn eval`` takes from the checkpoint when the command line does not say,
#: and the defaults for a checkpoint that records nothing (written before metalearn 0.x
#: recorded its data, or converted from elsewhere).
_DATA_KEYS = {"dataset": "glyphs", "data_dir": None, "seed": 0, "rotations": False,
              "reflections": False, "holdout": "auto"}


def recorded_data(meta: dict[str, Any], checkpoint: str | Path) -> dict[str, Any] | None:
    """The training data a checkpoint records: its own metadata, else the ``run.json`` of
    the run folder it sits in; None when neither says."""
    if isinstance(meta.get("data"), dict) and meta["data"].get("dataset"):
        return meta["data"]
    import json

    run_json = Path(checkpoint).parent / "run.json"
    try:
        data = json.loads(run_json.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return data if isinstance(data, dict) and data.get("dataset") else None


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "data_dir" and a is not None and b is not None:
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def resolve_eval_data(args: Any, recorded: dict[str, Any] | None) -> list[str]:
    """Fill ``args.dataset/data_dir/seed/rotations/reflections`` the user left unset (None) from the
    checkpoint's record; return warnings for values the user set that differ from it."""
    warnings = []
    for key, default in _DATA_KEYS.items():
        given = getattr(args, key, None)
        if given is None:
            value = recorded.get(key, default) if recorded else default
            setattr(args, key, value)
        elif recorded is not None and key in recorded and not _same(key, given, recorded[key]):
            flag = "--" + key.replace("_", "-")
            warnings.append(
                f"the checkpoint was trained with {flag} {recorded[key]}, but this evaluation "
                f"uses {flag} {given}: the accuracy is not on the held-out split of the "
                "training data. Leave the option out to evaluate on what the model was trained on.")
    if recorded is None:
        warnings.append("the checkpoint records no training data (no metadata, no run.json "
                        f"beside it); evaluating on --dataset {args.dataset} --seed {args.seed}.")
    return warnings


def _shown(flag: str, value: Any) -> str:
    return flag if value is True else f"no {flag}" if value is False else f"{flag} {value}"


def resolve_model_options(spec: Any, config: Any, args: Any) -> tuple[dict[str, Any], list[str]]:
    """Set the model's options on ``args`` from a checkpoint's config and say where the
    command line differs: ``(overrides, notes)``. What the config fixes (``args_from_config``:
    image size, backbone, head, the ways of a fixed-output model) and the model's
    training-time options keep the checkpoint's value, with a note; an evaluation-time option
    (``Option.at_eval``) given with another value goes into ``overrides``, to be applied."""
    overrides: dict[str, Any] = {}
    notes = []

    def fixed(flag: str, have: Any, given: Any) -> None:
        notes.append(f"note: {flag} is fixed in training: the checkpoint's {config.model} has "
                     f"{_shown(flag, have)}; using it (not {_shown(flag, given)})")

    taken = spec.args_from_config(config)
    for key, value in taken.items():
        given = getattr(args, key, None)
        if given is not None and given != value:
            fixed("--" + key.replace("_", "-"), value, given)
        setattr(args, key, value)
    for option in spec.options:
        name = option.dest
        given = getattr(args, name, None)
        if (given is None or name in taken or not hasattr(config, name)
                or given == getattr(config, name)):
            continue
        if given is False and option.kwargs.get("action") == "store_true":
            continue  # a flag left out
        flag, have = option.flags[0], getattr(config, name)
        if option.at_eval:
            overrides[name] = given
            notes.append(f"note: evaluating with {_shown(flag, given)} (the checkpoint's "
                         f"{config.model} was trained with {_shown(flag, have)})")
        else:
            fixed(flag, have, given)
    return overrides, notes


def main_eval(args: Any, framework: str, load: Callable[[str], tuple[Any, dict]],
              make_fns: Callable[[Any], ModelFns]) -> int:
    """``metalearn eval``: load a checkpoint, rebuild its data split, report accuracy.

    The data (dataset, data folder, split seed, rotations) defaults to what the checkpoint
    was trained on; what is evaluated on is printed, and an option that contradicts the
    checkpoint's record draws a warning (on stderr, so stdout stays the JSON report).
    """
    import json
    import sys

    from metalearn_shared import models

    model, meta = load(args.checkpoint)
    cfg = model.config
    args.model = cfg.model
    overrides, notes = resolve_model_options(models.get(cfg.model), cfg, args)
    for note in notes:
        print(note, file=sys.stderr)
    if overrides:  # read when the model runs (Option.at_eval), so set on the loaded model
        model.config = cfg = dataclasses.replace(cfg, **overrides)
    for warning in resolve_eval_data(args, recorded_data(meta, args.checkpoint)):
        print(f"metalearn eval: warning: {warning}", file=sys.stderr)
    args.steps = 0
    setup = T.setup_from_args(args)
    where = f" from {args.data_dir}" if args.data_dir else ""
    alphabets = list(setup.test_data.alphabets)
    shown = ", ".join(alphabets[:4]) + (f", … ({len(alphabets)} alphabets)" if len(alphabets) > 4 else "")
    print(f"metalearn eval: evaluating on {args.dataset}{where}, held-out alphabets of "
          f"--holdout {args.holdout} (seed {args.seed}): {setup.test_data.num_classes} classes "
          f"({shown}), "
          f"{args.size}×{args.size} px", file=sys.stderr)
    fns = make_fns(model)
    out = Path(args.out) if args.out else None
    protocol = getattr(args, "protocol", "episodes")
    members: list[Member] = list(getattr(args, "ensemble_members", None) or [])
    views = getattr(args, "tta", 1)
    if views != 1 and args.lake_runs:
        raise ValueError("--tta augments the episodes of --protocol; the official runs "
                         "(--lake-runs) are scored without it: leave one of them out.")

    tuning = None
    if getattr(args, "finetune", 0):
        tuning = FineTuning(args.finetune, args.finetune_lr, args.finetune_views,
                            args.finetune_augment, args.finetune_entropy)
        if args.lake_runs:
            raise ValueError("--finetune tunes on the trials of --protocol; the official runs "
                             "(--lake-runs) are scored without it: leave one of them out.")

    def augmented(f: ModelFns) -> ModelFns:  # every model is tuned, and sees views, alike
        if tuning is not None:
            f = SupportFineTuning(f, tuning, setup.train.seed).fns()
        if views == 1:
            return f
        return TestTimeAugmentation(f, views, augment_spec(args.tta_augment), setup.train.seed).fns()

    fns = augmented(fns)
    combined: Ensemble | None = None
    if members:
        first = recorded_data(meta, args.checkpoint)
        for m in members:
            _check_member(first, m)
        if not setup.test_data.num_classes:
            raise ValueError("--ensemble evaluates on held-out alphabets; the checkpoints hold "
                             "none out.")
        combined = Ensemble([fns, *(augmented(m.fns) for m in members)])
        fns = combined.fns()
    if setup.test_data.num_classes:
        report = evaluate(fns, setup, args.episodes, out, label=f"{cfg.model} ({framework})",
                          protocol=protocol)
        report["data"] = {**setup.data, "split": "held-out alphabets"}
    elif args.lake_runs:  # trained on every alphabet: the official runs are the evaluation
        report = {"model": cfg.model, "data": {**setup.data, "split": "none held out"}}
    else:
        raise ValueError(f"the checkpoint was trained with --holdout {args.holdout}: no "
                         "alphabet is held out to evaluate on. Evaluate on the official runs "
                         "(--lake-runs DIR), or on another split with --holdout (its alphabets "
                         "were seen in training, so that accuracy is not held-out).")
    if args.lake_runs:
        report["lake_runs"] = lake_runs(fns, args.lake_runs, args.size)
    if overrides:
        report["eval_options"] = overrides
    if tuning is not None:
        report["finetune"] = {**dataclasses.asdict(tuning),
                              "rule": "plain SGD, in inference mode, on the model's loss on "
                                      "an episode of the trial's support images and "
                                      f"{tuning.views} distorted copies of each as queries, "
                                      f"plus {tuning.entropy} x the mean entropy of the "
                                      "predictions for the trial's queries; weights restored "
                                      "after every trial"}
    if views != 1:
        report["test_time_augmentation"] = {
            "views": views, "augment": args.tta_augment,
            "rule": "mean of the softmax class probabilities over the episode and "
                    f"{views - 1} distorted copies of it"}
    if combined is not None:  # each member's accuracy, replayed from the ensemble's run
        member_reports = []
        for i, (path, fw) in enumerate([(args.checkpoint, framework),
                                        *((m.checkpoint, m.framework) for m in members)]):
            alone = evaluate(combined.member(i), setup, args.episodes, None, protocol=protocol)
            member_reports.append({"checkpoint": str(path), "framework": fw,
                                   "accuracy": alone["accuracy"]})
            print(f"metalearn eval: member {path} ({fw}): {alone['accuracy']['mean']:.2%}",
                  file=sys.stderr)
        report["ensemble"] = {"rule": "mean of the members' softmax class probabilities",
                              "members": member_reports}
    report["checkpoint_step"] = meta.get("step")
    report["framework"] = framework
    if out is not None:
        T.write_json(out / "eval.json", report)
    print(json.dumps(report, indent=1))
    return 0
