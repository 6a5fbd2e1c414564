"""Alphabet-disjoint splits of a dataset: the official one, a seeded one, and folds.

:func:`official_split` parts Omniglot into its background and evaluation alphabets
(:data:`BACKGROUND_ALPHABETS`, :data:`EVALUATION_ALPHABETS`); :func:`split_by_alphabet`
draws a seeded split of any dataset with alphabets (the small sets, glyphs), for when only
one side of the official split is at hand; :func:`alphabet_folds` cuts the alphabets into
``k`` seeded, disjoint folds for alphabet cross-validation. :func:`holdout_split` is the one
entry point the trainers use: it reads a ``--holdout`` choice (:func:`parse_holdout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from metalearn_shared.data.dataset import ImageDataset

__all__ = [
    "BACKGROUND_ALPHABETS",
    "EVALUATION_ALPHABETS",
    "HOLDOUT_HELP",
    "Holdout",
    "alphabet_folds",
    "holdout_split",
    "official_split",
    "parse_holdout",
    "split_by_alphabet",
]

BACKGROUND_ALPHABETS: tuple[str, ...] = (
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian",
    "Asomtavruli_(Georgian)", "Balinese", "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Braille", "Burmese_(Myanmar)", "Cyrillic", "Early_Aramaic", "Futurama", "Grantha", "Greek",
    "Gujarati", "Hebrew", "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)",
    "Japanese_(katakana)", "Korean", "Latin", "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)",
    "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit", "Syriac_(Estrangelo)",
    "Tagalog", "Tifinagh",
)
EVALUATION_ALPHABETS: tuple[str, ...] = (
    "Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta", "Ge_ez", "Glagolitic",
    "Gurmukhi", "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)", "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan",
    "ULOG",
)


# -- splits --------------------------------------------------------------------------------
def official_split(dataset: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    """The official split: (background alphabets, evaluation alphabets).

    Raises:
        ValueError: the dataset lacks one side (e.g. only the small sets, which are both
            drawn from the background alphabets) or holds alphabets of neither list.
    """
    present = dataset.alphabets
    background = [a for a in present if a in BACKGROUND_ALPHABETS]
    evaluation = [a for a in present if a in EVALUATION_ALPHABETS]
    other = [a for a in present if a not in BACKGROUND_ALPHABETS + EVALUATION_ALPHABETS]
    if other:
        raise ValueError(f"{dataset.name}: alphabets {other} are in neither official list; "
                         "use split_by_alphabet instead.")
    if not background or not evaluation:
        raise ValueError(
            f"{dataset.name}: the official split needs background and evaluation alphabets; "
            f"found {len(background)} background and {len(evaluation)} evaluation. Load "
            "'all' (images_background.zip + images_evaluation.zip), or use split_by_alphabet "
            "for the small sets."
        )
    return (dataset.subset_alphabets(background, name=f"{dataset.name}-background"),
            dataset.subset_alphabets(evaluation, name=f"{dataset.name}-evaluation"))


def _split_counts(parts: Sequence[float], n: int) -> list[int]:
    if not parts:
        raise ValueError("split_by_alphabet: give at least one fraction or count.")
    if all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in parts):
        counts = [int(p) for p in parts]
        if min(counts) < 1 or sum(counts) > n:
            raise ValueError(f"split_by_alphabet: counts {counts} must each be ≥ 1 and sum to at "
                             f"most the {n} alphabets available.")
        return counts
    fractions = np.asarray(parts, dtype=np.float64)
    if fractions.min() <= 0 or fractions.sum() > 1 + 1e-9:
        raise ValueError(f"split_by_alphabet: fractions {list(parts)} must be > 0 and sum to at "
                         "most 1.")
    # Largest-remainder rounding of the fractions to whole alphabets.
    exact = fractions * n
    counts = np.floor(exact).astype(int)
    spare = int(round(min(fractions.sum(), 1.0) * n)) - counts.sum()
    counts[np.argsort(counts - exact, kind="stable")[:spare]] += 1
    if counts.min() < 1:
        raise ValueError(f"split_by_alphabet: fractions {list(parts)} of {n} alphabets leave a "
                         f"part empty ({counts.tolist()} alphabets); use larger fractions or counts.")
    return counts.tolist()


def split_by_alphabet(
    dataset: ImageDataset,
    parts: Sequence[float] = (0.75, 0.25),
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> tuple[ImageDataset, ...]:
    """Split into alphabet-disjoint datasets, seeded.

    Args:
        dataset: any dataset with alphabets (Omniglot, glyphs).
        parts: fractions of the alphabets (floats, summing to at most 1) or numbers of
            alphabets (ints) per part, e.g. ``(0.75, 0.25)`` or ``(6, 2)``.
        seed: the alphabets (sorted by name) are shuffled with ``default_rng(seed)``.
        names: dataset names of the parts (default ``"<name>-split<i>"``).

    Returns:
        One dataset per part; no alphabet appears in two parts.
    """
    alphabets = sorted(dataset.alphabets)
    counts = _split_counts(parts, len(alphabets))
    order = np.random.default_rng(seed).permutation(len(alphabets))
    names = list(names) if names is not None else [f"{dataset.name}-split{i}"
                                                   for i in range(len(counts))]
    if len(names) != len(counts):
        raise ValueError(f"split_by_alphabet: {len(counts)} parts but {len(names)} names.")
    bounds = np.cumsum([0, *counts])
    return tuple(
        dataset.subset_alphabets([alphabets[i] for i in order[lo:hi]], name=n)
        for lo, hi, n in zip(bounds[:-1], bounds[1:], names, strict=True)
    )


def alphabet_folds(dataset: ImageDataset, k: int, seed: int = 0) -> list[tuple[str, ...]]:
    """The dataset's alphabets in ``k`` disjoint folds of near-equal size, seeded.

    The alphabets (sorted by name) are shuffled with ``default_rng(seed)`` and dealt into
    ``k`` consecutive runs whose sizes differ by at most one (the larger first), so the
    folds together hold every alphabet exactly once.

    Raises:
        ValueError: ``k < 2`` or more folds than alphabets.
    """
    alphabets = sorted(dataset.alphabets)
    if not 2 <= k <= len(alphabets):
        raise ValueError(f"{dataset.name}: alphabet folds need 2 ≤ k ≤ {len(alphabets)} (its "
                         f"alphabets); got k = {k}.")
    order = np.random.default_rng(seed).permutation(len(alphabets))
    sizes = [len(alphabets) // k + (i < len(alphabets) % k) for i in range(k)]
    bounds = np.cumsum([0, *sizes])
    return [tuple(alphabets[j] for j in order[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


class Holdout(NamedTuple):
    """A parsed ``--holdout`` choice (see :data:`HOLDOUT_HELP`).

    Attributes:
        kind: ``"auto"``, ``"fold"``, ``"none"`` or ``"alphabets"``.
        fold: 1-based fold held out (``kind == "fold"``), else 0.
        folds: number of folds (``kind == "fold"``), else 0.
        alphabets: the held-out alphabets (``kind == "alphabets"``), else ``()``.
    """

    kind: str
    fold: int = 0
    folds: int = 0
    alphabets: tuple[str, ...] = ()


HOLDOUT_HELP = (
    "which alphabets are held out from training: auto (the official background/evaluation "
    "split when both are loaded, else a seeded 75/25 alphabet split), fold:I/K (alphabet "
    "cross-validation: the alphabets in K seeded folds, fold I held out, 1 ≤ I ≤ K), "
    "alphabets:A,B,... (these alphabets), or none (train on every alphabet: evaluate "
    "externally, e.g. on the official runs with --lake-runs)")


def parse_holdout(text: str) -> Holdout:
    """Parse a ``--holdout`` value; a ValueError names what is wrong and what is accepted."""
    what = str(text).strip()
    if what in ("auto", "none"):
        return Holdout(what)
    kind, _, rest = what.partition(":")
    if kind == "fold":
        i, _, k = rest.partition("/")
        try:
            fold, folds = int(i), int(k)
        except ValueError:
            fold = folds = 0
        if folds < 2 or not 1 <= fold <= folds:
            raise ValueError(f"--holdout {what!r}: a fold is written fold:I/K with K ≥ 2 folds "
                             "and 1 ≤ I ≤ K, e.g. fold:1/4.")
        return Holdout("fold", fold, folds)
    if kind == "alphabets":
        names = tuple(a.strip() for a in rest.split(",") if a.strip())
        if not names:
            raise ValueError(f"--holdout {what!r}: name the held-out alphabets, e.g. "
                             "alphabets:Greek,Korean.")
        return Holdout("alphabets", alphabets=names)
    raise ValueError(f"--holdout {what!r}: expected auto, none, fold:I/K or alphabets:A,B,...")


def holdout_split(dataset: ImageDataset, holdout: str | Holdout,
                  seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """(train, held-out) datasets of a ``--holdout`` choice; alphabet-disjoint.

    ``auto`` is the official split when the dataset holds both of its sides, else a seeded
    75/25 split (:func:`split_by_alphabet`); ``fold:I/K`` holds out fold ``I`` of
    :func:`alphabet_folds` (same ``seed``); ``none`` trains on everything and holds out an
    empty dataset.
    """
    h = parse_holdout(holdout) if isinstance(holdout, str) else holdout
    name = dataset.name
    if h.kind == "auto":
        present = set(dataset.alphabets)
        if present & set(BACKGROUND_ALPHABETS) and present & set(EVALUATION_ALPHABETS):
            return official_split(dataset)
        return split_by_alphabet(dataset, (0.75, 0.25), seed=seed)
    if h.kind == "none":
        return dataset, dataset.subset([], name=f"{name}-none")
    if h.kind == "fold":
        held = alphabet_folds(dataset, h.folds, seed)[h.fold - 1]
        tag = f"fold{h.fold}of{h.folds}"
    else:
        held = h.alphabets
        unknown = sorted(set(held) - set(dataset.alphabets))
        if unknown:
            raise ValueError(f"--holdout: {name} has no alphabet {unknown}; its alphabets are "
                             f"{sorted(dataset.alphabets)}.")
        tag = "alphabets"
    rest = [a for a in dataset.alphabets if a not in set(held)]
    if not rest:
        raise ValueError(f"--holdout: holding out every alphabet of {name} leaves nothing to "
                         "train on; hold out fewer.")
    return (dataset.subset_alphabets(rest, name=f"{name}-train-{tag}"),
            dataset.subset_alphabets(held, name=f"{name}-test-{tag}"))
