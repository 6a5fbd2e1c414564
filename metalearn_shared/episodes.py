"""Episode samplers: few-shot episodes, Lake's within-alphabet trials, verification pairs
and MANN sequences.

Determinism:
    Episode ``i`` of a sampler with seed ``s`` is drawn from its own generator,
    ``np.random.default_rng(np.random.SeedSequence([s, i]))`` (:func:`episode_rng`), and from
    nothing else. An episode is therefore a pure function of ``(seed, i)``: a data-loader
    worker or a distributed rank draws its share of episodes without coordination, a batch
    is the same whichever way it is cut, and the Keras and PyTorch trainers see identical
    episodes. ``sampler.batch(start, size)`` stacks episodes ``start .. start + size - 1``
    along a leading ``B`` axis; ``sampler.episode(i)`` equals ``batch(i, 1)`` without it.

Images:
    Every sampler returns ``float32`` images in ``[0, 1]`` (exactly ``uint8 / 255``) without a
    channel axis, ``(..., H, W)``; each framework adds its own channel layout.

Speed:
    Python runs once per episode (a generator and a handful of small array draws); images
    are gathered for the whole batch with one fancy index and converted in one pass.

Augmentation:
    The pairs' affine distortions live in :mod:`metalearn_shared.augment`;
    :class:`KochAffine` is re-exported here.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from metalearn_shared.augment import KochAffine, _affine_warp, _augment_ranges, _koch_params
from metalearn_shared.data.dataset import ImageDataset
from metalearn_shared.sampling import (
    _check_classes,
    _choose,
    _count,
    _distinct,
    _Pool,
    _Sampler,
    _to_float,
    _unbatch,
)

__all__ = [
    "FewShotEpisode",
    "FewShotSampler",
    "KochAffine",
    "PairBatch",
    "PairSampler",
    "STRING_ALPHABET",
    "STRING_LENGTH",
    "SequenceEpisode",
    "SequenceSampler",
    "WithinAlphabetSampler",
    "episode_rng",
]

#: Santoro et al. (2016) string labels: 5 characters, each from a 5-letter alphabet.
STRING_LENGTH = 5
STRING_ALPHABET = 5
_STRING_CODES = STRING_ALPHABET**STRING_LENGTH  # 3125 distinct strings
# Base-5 place values, most significant character first.
_STRING_PLACES = STRING_ALPHABET ** np.arange(STRING_LENGTH - 1, -1, -1, dtype=np.int64)


# -- episode records -------------------------------------------------------------------
class FewShotEpisode(NamedTuple):
    """One N-way K-shot episode with Q queries per class (leading ``B`` when batched).

    Both sets are class-major: the ``K`` support images of label 0, then of label 1, ...;
    likewise the ``Q`` queries of label 0, then of label 1, ... Shuffle the queries yourself
    if a model is order-sensitive (none of the metric models are).

    Attributes:
        support_x: ``float32 (N*K, H, W)`` in [0, 1].
        support_y: ``int64 (N*K,)`` labels ``0 .. N-1``, ``repeat(arange(N), K)``.
        query_x: ``float32 (N*Q, H, W)`` in [0, 1].
        query_y: ``int64 (N*Q,)``, ``repeat(arange(N), Q)``.
        classes: ``int64 (N,)`` dataset class id of each label: label ``j`` is ``classes[j]``.
        support_index: ``int64 (N*K,)`` dataset index of each support image.
        query_index: ``int64 (N*Q,)`` dataset index of each query image; never one of
            ``support_index``.
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray
    support_index: np.ndarray
    query_index: np.ndarray


class PairBatch(NamedTuple):
    """``B`` verification pairs (leading ``E`` more when batched).

    Attributes:
        x1: ``float32 (B, H, W)`` first images in [0, 1].
        x2: ``float32 (B, H, W)`` second images in [0, 1].
        y: ``float32 (B,)``: **1 = same class**, 0 = different classes.
        index1: ``int64 (B,)`` dataset index of each ``x1``.
        index2: ``int64 (B,)`` dataset index of each ``x2``; never equal to ``index1``.
    """

    x1: np.ndarray
    x2: np.ndarray
    y: np.ndarray
    index1: np.ndarray
    index2: np.ndarray


class SequenceEpisode(NamedTuple):
    """One MANN episode of ``T`` steps (leading ``B`` when batched).

    Attributes:
        x: ``float32 (T, H*W)`` flattened images in [0, 1].
        prev_label: ``float32 (T, L)`` encoding of the previous step's target, zeros at
            ``t = 0``: one-hot with ``L = ways``, or in string mode the concatenation of
            5 one-hot characters, ``L = 25``.
        y: targets: ``int64 (T,)`` labels ``0 .. ways-1`` (one-hot mode) or
            ``int64 (T, 5)`` character ids ``0 .. 4`` (string mode).
        instance: ``int64 (T,)`` how many times the step's class was shown before step t
            (0 at its first presentation), for 1st..10th-presentation accuracy.
        classes: ``int64 (ways,)`` dataset class id of each label: label ``j`` (or the
            ``j``-th string, see ``strings``) is ``classes[j]``.
        index: ``int64 (T,)`` dataset index of each image.
        label: ``int64 (T,)`` label slot ``0 .. ways-1`` of each step, in both modes.
        strings: ``int64 (ways, 5)`` the string of each label slot (string mode);
            ``(ways, 0)`` in one-hot mode.
    """

    x: np.ndarray
    prev_label: np.ndarray
    y: np.ndarray
    instance: np.ndarray
    classes: np.ndarray
    index: np.ndarray
    label: np.ndarray
    strings: np.ndarray


# -- determinism -----------------------------------------------------------------------
def episode_rng(seed: int, i: int) -> np.random.Generator:
    """The generator of episode ``i``: ``default_rng(SeedSequence([seed, i]))``.

    Args:
        seed: the sampler's seed, a non-negative integer.
        i: the episode index, a non-negative integer.

    Returns:
        A fresh :class:`numpy.random.Generator` (PCG64) that depends only on ``(seed, i)``.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, i]))


def _fewshot_batch(images: np.ndarray, classes: np.ndarray, index: np.ndarray,
                   shots: int, params: np.ndarray | None = None) -> FewShotEpisode:
    """Episodes from drawn classes ``(B, N)`` and dataset indices ``(B, N, K+Q)``: the first
    ``shots`` instances of each class are its support images, the rest its queries;
    ``params (B, N, K+Q, P)``, when given, distorts each image (:func:`_affine_warp`)."""
    size, n, m = index.shape
    support_index = index[:, :, :shots].reshape(size, n * shots)  # (B, N*K) class-major
    query_index = index[:, :, shots:].reshape(size, n * (m - shots))  # (B, N*Q)
    labels = np.arange(n, dtype=np.int64)
    support_x = _to_float(images[support_index])  # (B, N*K, H, W)
    query_x = _to_float(images[query_index])  # (B, N*Q, H, W)
    if params is not None:  # (B, N, K+Q, P) split like the indices
        support_x = _affine_warp(support_x, params[:, :, :shots].reshape(size, n * shots, -1))
        query_x = _affine_warp(query_x, params[:, :, shots:].reshape(size, n * (m - shots), -1))
    return FewShotEpisode(
        support_x=support_x,
        support_y=np.tile(np.repeat(labels, shots), (size, 1)),
        query_x=query_x,
        query_y=np.tile(np.repeat(labels, m - shots), (size, 1)),
        classes=classes,
        support_index=support_index,
        query_index=query_index,
    )


# -- few-shot episodes -----------------------------------------------------------------
class FewShotSampler(_Sampler):
    """N-way K-shot episodes with Q queries per class (Vinyals et al. 2016; Snell et al. 2017).

    Each episode draws ``ways`` distinct classes in random order (label ``j`` is the j-th
    drawn class) and ``shots + queries`` distinct instances of each; the first ``shots`` form
    the support set and the rest the queries, so the two never share an image.

    Args:
        dataset: the classes to draw from; each needs ``shots + queries`` instances.
        ways: classes per episode, N.
        shots: support images per class, K.
        queries: query images per class, Q (0 gives support-only episodes).
        seed: non-negative integer; episode ``i`` depends only on ``(seed, i)``.
        augment: ``True`` for :class:`KochAffine` defaults, or a :class:`KochAffine`; one
            independent distortion per support and query image, drawn from the episode's
            generator after the classes and instances (which stay those of ``augment=False``).

    Raises:
        ValueError: non-positive sizes, more ways than classes, or a class with fewer than
            ``shots + queries`` instances.
    """

    def __init__(
        self, dataset: ImageDataset, ways: int, shots: int, queries: int, seed: int = 0,
        augment: bool | KochAffine | None = False,
    ) -> None:
        owner = type(self).__name__
        self.dataset = dataset
        self.augment = _augment_ranges(augment)
        self.ways = _count(owner, "ways", ways)
        self.shots = _count(owner, "shots", shots)
        self.queries = _count(owner, "queries", queries, minimum=0)
        self.seed = _count(owner, "seed", seed, minimum=0)
        _check_classes(
            owner,
            dataset,
            self.ways,
            self.shots + self.queries,
            ways="ways",
            per_class="shots + queries",
            detail=f" = {self.shots} + {self.queries}",
        )
        self._pool = _Pool.of(dataset)

    def episode(self, i: int) -> FewShotEpisode:
        """Episode ``i``: support ``(N*K, H, W)``, queries ``(N*Q, H, W)``, class-major."""
        return _unbatch(self.batch(self._index(i), 1))

    def batch(self, start: int, size: int) -> FewShotEpisode:
        """Episodes ``start .. start + size - 1`` stacked: every field gains a leading ``B``."""
        n, k, q = self.ways, self.shots, self.queries
        start, size = self._range(start, size)
        rngs = [episode_rng(self.seed, i) for i in range(start, start + size)]
        classes = np.empty((size, n), dtype=np.int64)  # (B, N)
        index = np.empty((size, n, k + q), dtype=np.int64)  # (B, N, K+Q)
        params = self._params((size, n, k + q))  # (B, N, K+Q, P): one distortion per image
        for e, rng in enumerate(rngs):
            cls, idx = _choose(rng, self._pool, 1, n, k + q)
            classes[e] = cls[0]
            index[e] = idx[0]
            if params is not None:
                params[e] = _koch_params(rng, self.augment, (n, k + q), self.dataset.image_shape)
        return _fewshot_batch(self.dataset.images, classes, index, k, params)


# -- Lake's within-alphabet one-shot trials ----------------------------------------------
class WithinAlphabetSampler(_Sampler):
    """Lake et al.'s one-shot classification trials (Science 2015): every class of a trial
    comes from one alphabet, and the training and test drawings are by different drawers.

    Trial ``i`` draws an alphabet uniformly among the *eligible* ones (at least ``ways``
    characters with ``shots + queries`` drawings each), ``ways`` distinct characters of it in
    random order, and ``shots + queries`` distinct drawer positions shared by all of them:
    the support set is every character's drawings at the first ``shots`` positions, the
    queries those at the others. Omniglot's drawings of a character are 20 drawers' (files
    ``<id>_<drawer>.png``, read in file-name order), so a query is never by the drawer of
    its class's support image, and, where a drawer number is the same person across an
    alphabet's characters, all training images of a trial are one person's and all test
    images another's, as in Lake's runs. With the defaults (20-way, 1 shot, 1 query) a
    trial is one of Lake's runs: 20 test images, each matched against 20 training images.

    Returns :class:`FewShotEpisode` (class-major), like :class:`FewShotSampler`.

    Args:
        dataset: classes with alphabets (Omniglot, glyphs).
        ways: characters per trial (20 in Lake's protocol).
        shots: training drawings per character (1).
        queries: test drawings per character (1).
        seed: non-negative integer; trial ``i`` depends only on ``(seed, i)``.
        augment: ``True`` for :class:`KochAffine` defaults, or a :class:`KochAffine`; one
            independent distortion per image, drawn after the classes and drawers (which stay
            those of ``augment=False``). For training episodes (``metalearn train
            --episode-classes within-alphabet``); Lake's trials themselves are never distorted.

    Attributes:
        alphabets: the eligible alphabets, in the dataset's order.
        skipped: ``{alphabet: characters}`` of the alphabets with fewer than ``ways``
            characters large enough, which no trial uses.

    Raises:
        ValueError: no alphabet has ``ways`` characters with ``shots + queries`` drawings.
    """

    def __init__(self, dataset: ImageDataset, ways: int = 20, shots: int = 1,
                 queries: int = 1, seed: int = 0,
                 augment: bool | KochAffine | None = False) -> None:
        owner = type(self).__name__
        self.dataset = dataset
        self.augment = _augment_ranges(augment)
        self.ways = _count(owner, "ways", ways)
        self.shots = _count(owner, "shots", shots)
        self.queries = _count(owner, "queries", queries)
        self.seed = _count(owner, "seed", seed, minimum=0)
        need = self.shots + self.queries
        names = [c.alphabet for c in dataset.classes]
        members: dict[str, list[int]] = {}
        for cls, name in enumerate(names):
            if dataset.counts[cls] >= need:
                members.setdefault(name, []).append(cls)
        self.alphabets = tuple(a for a in dataset.alphabets if len(members.get(a, [])) >= self.ways)
        self.skipped = {a: len(members.get(a, [])) for a in dataset.alphabets
                        if a not in self.alphabets}
        if not self.alphabets:
            sizes = ", ".join(f"{a} {n}" for a, n in self.skipped.items()) or "none"
            raise ValueError(
                f"{owner}: a {self.ways}-way within-alphabet trial needs an alphabet with "
                f"{self.ways} characters of at least shots + queries = {need} drawings; "
                f"'{dataset.name}' has none (characters per alphabet: {sizes}). Lower ways, or "
                "hold out alphabets with more characters.")
        self._members = [np.asarray(members[a], dtype=np.int64) for a in self.alphabets]

    def episode(self, i: int) -> FewShotEpisode:
        """Trial ``i``: support ``(N*K, H, W)``, queries ``(N*Q, H, W)``, class-major."""
        return _unbatch(self.batch(self._index(i), 1))

    def batch(self, start: int, size: int) -> FewShotEpisode:
        """Trials ``start .. start + size - 1`` stacked: every field gains a leading ``B``."""
        n, k, q = self.ways, self.shots, self.queries
        start, size = self._range(start, size)
        classes = np.empty((size, n), dtype=np.int64)  # (B, N)
        index = np.empty((size, n, k + q), dtype=np.int64)  # (B, N, K+Q)
        params = self._params((size, n, k + q))
        by_class, counts = self.dataset.by_class, self.dataset.counts
        for e, i in enumerate(range(start, start + size)):
            rng = episode_rng(self.seed, i)
            members = self._members[int(rng.random() * len(self._members))]  # the alphabet
            m = members.size
            classes[e] = members[_distinct(rng, np.array([m]), n, m, m)[0]]
            drawers = int(counts[classes[e]].min())  # positions every chosen class has
            pos = _distinct(rng, np.array([drawers]), k + q, drawers, drawers)[0]  # (K+Q,)
            index[e] = by_class[classes[e][:, None], pos[None, :]]
            if params is not None:
                params[e] = _koch_params(rng, self.augment, (n, k + q), self.dataset.image_shape)
        return _fewshot_batch(self.dataset.images, classes, index, k, params)


# -- verification pairs ----------------------------------------------------------------
class PairSampler(_Sampler):
    """Balanced same/different pairs for Siamese verification (Koch et al. 2015).

    Each batch holds exactly ``batch // 2`` same pairs (two distinct instances of one class)
    and ``batch - batch // 2`` different pairs (one instance each of two distinct classes),
    in random order. Classes repeat freely across the pairs of a batch.

    Args:
        dataset: needs at least 2 classes with at least 2 instances each.
        batch: pairs per batch, B.
        seed: non-negative integer; pair batch ``i`` depends only on ``(seed, i)``.
        augment: ``True`` for :class:`KochAffine` defaults, or a :class:`KochAffine`; one
            independent distortion per image, drawn from the batch's generator.
        within_alphabet: the two classes of every different pair come from one alphabet
            (drawn uniformly among those with 2 or more classes): the hard negatives of
            Lake's within-alphabet trials (``metalearn train --episode-classes
            within-alphabet``).

    Raises:
        ValueError: non-positive batch, fewer than 2 classes, a class with 1 instance, or
            (``within_alphabet``) no alphabet with 2 classes.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch: int,
        seed: int = 0,
        augment: bool | KochAffine | None = False,
        within_alphabet: bool = False,
    ) -> None:
        owner = type(self).__name__
        self.dataset = dataset
        self.batch_size = _count(owner, "batch", batch)
        self.seed = _count(owner, "seed", seed, minimum=0)
        self.augment = _augment_ranges(augment)
        # A different pair needs 2 classes; a same pair 2 instances of one class.
        _check_classes(
            owner,
            dataset,
            2,
            2,
            ways="classes per different pair",
            per_class="images per same pair",
            adjustable=False,
        )
        self._pool = _Pool.of(dataset)
        # within_alphabet: the classes of the alphabets with 2 or more, alphabet by alphabet,
        # and each alphabet's start and size in that array
        self._alphabets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if within_alphabet:
            members: dict[str, list[int]] = {}
            for c, info in enumerate(dataset.classes):
                members.setdefault(info.alphabet, []).append(c)
            groups = [m for m in members.values() if len(m) >= 2]
            if not groups:
                raise ValueError(f"{owner}: within-alphabet negatives need an alphabet with 2 "
                                 f"classes; '{dataset.name}' has none. Drop --episode-classes "
                                 "within-alphabet.")
            sizes = np.array([len(g) for g in groups], np.int64)
            self._alphabets = (np.concatenate(groups).astype(np.int64),
                               np.cumsum(sizes) - sizes, sizes)

    def _different(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` different pairs' dataset indices ``(n, 2)``."""
        if self._alphabets is None:
            return _choose(rng, self._pool, n, 2, 1)[1].reshape(n, 2)
        flat, start, sizes = self._alphabets
        which = (rng.random(n) * sizes.size).astype(np.int64)  # (n,) an alphabet per pair
        local = _distinct(rng, sizes[which], 2, int(sizes.min()), int(sizes.max()))  # (n, 2)
        classes = flat[start[which, None] + local].reshape(-1)  # (2n,)
        pos = _distinct(rng, self._pool.counts[classes], 1, self._pool.smallest,
                        self._pool.largest)  # (2n, 1)
        return self._pool.by_class[classes, pos[:, 0]].reshape(n, 2)

    def episode(self, i: int) -> PairBatch:
        """Pair batch ``i``: ``x1, x2 (B, H, W)``, ``y (B,)`` with 1 = same."""
        return _unbatch(self.batch(self._index(i), 1))

    def batch(self, start: int, size: int) -> PairBatch:
        """Pair batches ``start .. start + size - 1`` stacked: fields gain a leading ``E``."""
        pairs = self.batch_size
        n_same = pairs // 2
        n_diff = pairs - n_same
        start, size = self._range(start, size)
        rngs = [episode_rng(self.seed, i) for i in range(start, start + size)]
        index = np.empty((size, pairs, 2), dtype=np.int64)  # (E, B, 2)
        y = np.empty((size, pairs), dtype=np.float32)  # (E, B)
        params = self._params((size, 2, pairs))  # (E, 2, B, P): per image, x1 then x2
        for e, rng in enumerate(rngs):
            _, same = _choose(rng, self._pool, n_same, 1, 2)  # (S, 1, 2)
            diff = self._different(rng, n_diff)  # (D, 2)
            order = np.argsort(rng.random(pairs))  # (B,) shuffles same and different
            index[e] = np.concatenate([same.reshape(n_same, 2), diff])[order]
            y[e] = order < n_same
            if params is not None:
                params[e] = _koch_params(rng, self.augment, (2, pairs), self.dataset.image_shape)
        images = self.dataset.images
        x1 = _to_float(images[index[:, :, 0]])  # (E, B, H, W)
        x2 = _to_float(images[index[:, :, 1]])
        if params is not None:
            x1, x2 = _affine_warp(x1, params[:, 0]), _affine_warp(x2, params[:, 1])
        return PairBatch(
            x1=x1,
            x2=x2,
            y=y,
            index1=index[:, :, 0],
            index2=index[:, :, 1],
        )


# -- MANN sequences --------------------------------------------------------------------
class SequenceSampler(_Sampler):
    """Episodes for memory-augmented networks (Santoro et al. 2016).

    Each episode draws ``ways`` distinct classes, gives them labels in random order (label
    ``j`` is ``classes[j]``), and shows ``samples_per_class`` distinct instances of each class
    in one random interleaving of ``T = ways * samples_per_class`` steps, cut to the first
    ``length`` steps when given. Step ``t`` carries the previous step's label encoding as
    extra input (zeros at ``t = 0``).

    Args:
        dataset: each class needs ``samples_per_class`` instances.
        ways: classes per episode.
        samples_per_class: presentations of each class (10 in the paper).
        length: keep only the first ``length`` steps (``<= ways * samples_per_class``).
        seed: non-negative integer; episode ``i`` depends only on ``(seed, i)``.
        labels: ``"onehot"`` (``L = ways``) or ``"string"``: each class gets a distinct random
            string of 5 characters from a 5-letter alphabet, encoded 5-hot (``L = 25``),
            as in the paper's 15-way experiments.
        rotate: rotate all images of a class by the same random multiple of 90°, drawn per
            episode (the paper's augmentation); needs square images.
        augment: ``True`` for :class:`KochAffine` defaults, or a :class:`KochAffine` such as
            :data:`~metalearn_shared.augment.SANTORO_AFFINE` (the reference implementation's
            per-image rotation and shift); one independent distortion per step's image,
            drawn from the episode's generator after everything else, applied after
            ``rotate``.

    Raises:
        ValueError: non-positive sizes, more ways than classes (or than 5**5 strings),
            ``length`` beyond ``T``, a class with too few instances, an unknown label mode, or
            ``rotate`` on non-square images.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        ways: int,
        samples_per_class: int,
        length: int | None = None,
        seed: int = 0,
        labels: Literal["onehot", "string"] = "onehot",
        rotate: bool = False,
        augment: bool | KochAffine | None = False,
    ) -> None:
        owner = type(self).__name__
        self.dataset = dataset
        self.augment = _augment_ranges(augment)
        self.ways = _count(owner, "ways", ways)
        self.samples_per_class = _count(owner, "samples_per_class", samples_per_class)
        self.seed = _count(owner, "seed", seed, minimum=0)
        full = self.ways * self.samples_per_class
        self.length = full if length is None else _count(owner, "length", length)
        if self.length > full:
            raise ValueError(
                f"{owner}: length={self.length} exceeds ways × samples_per_class = "
                f"{self.ways} × {self.samples_per_class} = {full} steps; lower length or raise "
                f"samples_per_class."
            )
        if labels not in ("onehot", "string"):
            raise ValueError(f"{owner}: labels must be 'onehot' or 'string'; found {labels!r}.")
        self.labels = labels
        if labels == "string" and self.ways > _STRING_CODES:
            raise ValueError(
                f"{owner}: labels='string' has only {STRING_ALPHABET}**{STRING_LENGTH} = "
                f"{_STRING_CODES} distinct strings, but ways={self.ways}; lower ways to at "
                f"most {_STRING_CODES} or use labels='onehot'."
            )
        h, w = dataset.image_shape
        if rotate and h != w:
            raise ValueError(
                f"{owner}: rotate=True needs square images to rotate by 90°; '{dataset.name}' "
                f"has {h} × {w}. Resize the dataset (dataset.resized(size)) or pass rotate=False."
            )
        self.rotate = bool(rotate)
        _check_classes(
            owner,
            dataset,
            self.ways,
            self.samples_per_class,
            ways="ways",
            per_class="samples_per_class",
        )
        self._pool = _Pool.of(dataset)
        # (T_full,) the label slot of each step before shuffling: 0 … 0, 1 … 1, …
        self._slots = np.repeat(np.arange(self.ways, dtype=np.int64), self.samples_per_class)

    @property
    def label_size(self) -> int:
        """``L``, the width of ``prev_label``: ``ways`` or ``25`` in string mode."""
        return STRING_ALPHABET * STRING_LENGTH if self.labels == "string" else self.ways

    def episode(self, i: int) -> SequenceEpisode:
        """Episode ``i``: ``x (T, H*W)``, ``prev_label (T, L)``, ``y (T,)`` or ``(T, 5)``."""
        return _unbatch(self.batch(self._index(i), 1))

    def batch(self, start: int, size: int) -> SequenceEpisode:
        """Episodes ``start .. start + size - 1`` stacked: every field gains a leading ``B``."""
        n, per, t = self.ways, self.samples_per_class, self.length
        full = n * per
        string = self.labels == "string"
        start, size = self._range(start, size)
        rngs = [episode_rng(self.seed, i) for i in range(start, start + size)]
        classes = np.empty((size, n), dtype=np.int64)  # (B, N)
        index = np.empty((size, n, per), dtype=np.int64)  # (B, N, S)
        slot = np.empty((size, full), dtype=np.int64)  # (B, T_full)
        strings = np.empty((size, n, STRING_LENGTH if string else 0), dtype=np.int64)
        turns = np.zeros((size, n), dtype=np.int64)  # (B, N) quarter turns per class
        # (B, T_full, P): one distortion per presentation, in presentation order
        params = self._params((size, full))
        codes = np.full(1, _STRING_CODES, dtype=np.int64)  # (1,)
        for e, rng in enumerate(rngs):
            cls, idx = _choose(rng, self._pool, 1, n, per)
            classes[e] = cls[0]
            index[e] = idx[0]
            slot[e] = self._slots[np.argsort(rng.random(full))]
            if string:
                # (N,) distinct ints < 5**5, one string per label
                code = _distinct(rng, codes, n, _STRING_CODES, _STRING_CODES)[0]
                strings[e] = code[:, None] // _STRING_PLACES % STRING_ALPHABET
            if self.rotate:
                turns[e] = (rng.random(n) * 4).astype(np.int64)
            if params is not None:
                params[e] = _koch_params(rng, self.augment, (full,), self.dataset.image_shape)
        # Presentation count: a stable sort groups each class's steps in time order, and
        # every class has exactly `per` steps, so ranks within a group are arange % per.
        order = np.argsort(slot, axis=1, kind="stable")  # (B, T_full)
        instance = np.empty_like(slot)
        np.put_along_axis(instance, order, np.arange(full, dtype=np.int64) % per, axis=1)
        slot, instance = slot[:, :t].copy(), instance[:, :t].copy()  # (B, T) first t steps
        rows = np.arange(size)[:, None]  # (B, 1)
        step_index = index[rows, slot, instance]  # (B, T)

        images = self.dataset.images[step_index]  # (B, T, H, W) uint8
        if self.rotate:
            flat = images.reshape(-1, *images.shape[-2:])  # (B*T, H, W) view
            step_turns = turns[rows, slot].reshape(-1)  # (B*T,)
            for quarter in (1, 2, 3):
                sel = step_turns == quarter
                if sel.any():
                    flat[sel] = np.rot90(flat[sel], quarter, axes=(1, 2))
        x = _to_float(images)  # (B, T, H, W)
        if params is not None:
            x = _affine_warp(x, params[:, :t])
        x = x.reshape(size, t, -1)  # (B, T, H*W)

        if string:
            y = strings[rows, slot]  # (B, T, 5)
            eye = np.eye(STRING_ALPHABET, dtype=np.float32)
            encoded = eye[y].reshape(size, t, -1)  # (B, T, 25) 5-hot
        else:
            y = slot.copy()  # (B, T)
            encoded = np.eye(n, dtype=np.float32)[slot]  # (B, T, N)
        prev = np.zeros_like(encoded)
        prev[:, 1:] = encoded[:, :-1]
        return SequenceEpisode(
            x=x,
            prev_label=prev,
            y=y,
            instance=instance,
            classes=classes,
            index=step_index,
            label=slot,
            strings=strings,
        )
