"""Alphabet-disjoint splits of a dataset: the official one and a seeded one.

:func:`official_split` parts Omniglot into its background and evaluation alphabets
(:data:`BACKGROUND_ALPHABETS`, :data:`EVALUATION_ALPHABETS`); :func:`split_by_alphabet`
draws a seeded split of any dataset with alphabets (the small sets, glyphs), for when only
one side of the official split is at hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metalearn_shared.data.dataset import ImageDataset

__all__ = [
    "BACKGROUND_ALPHABETS",
    "EVALUATION_ALPHABETS",
    "official_split",
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
