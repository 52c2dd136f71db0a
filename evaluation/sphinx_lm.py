"""The two search models pocketsphinx judges with: an answer grammar and an ARPA n-gram LM.

Both are built from the domain's reply texts. The grammar accepts exactly those replies
(so it always "hears" one, even in noise); the LM accepts any word sequence over their
vocabulary. An answer counts only where the two agree, which rejects what the grammar
forced onto audio that does not say it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AnswerGraph", "answer_graph", "arpa_lm", "vocabulary"]

BOS, EOS = "<s>", "</s>"


def vocabulary(texts: Iterable[str]) -> list[str]:
    """The distinct words of ``texts``, sorted."""
    return sorted({w for t in texts for w in t.split()})


Transition = tuple[int, int, float] | tuple[int, int, float, str]


@dataclass(frozen=True)
class AnswerGraph:
    """A finite-state grammar accepting exactly the replies: the minimal acyclic automaton.

    Shared prefixes and shared endings ("... is sixteen") are merged, which makes the
    pocketsphinx search several times faster than a JSGF list of alternatives (or its
    prefix tree) for the same language. Each branch of a state is equally likely.
    """

    start: int
    final: int
    transitions: list[Transition]
    """``(from, to, probability, word)``; no word means a null move to :attr:`final`."""

    @property
    def states(self) -> int:
        return 1 + max(max(t[0], t[1]) for t in self.transitions)


def answer_graph(texts: Iterable[str]) -> AnswerGraph:
    """The minimal automaton over the word sequences ``texts`` (state 0 is final)."""
    sentences = sorted({tuple(t.split()) for t in texts if t.split()})
    if not sentences:
        raise ValueError("a grammar needs at least one non-empty text")
    registry: dict[tuple, int] = {}  # (accepts here, edges) -> state: equal suffixes merge

    def build(suffixes: list[tuple[str, ...]]) -> int:
        by_word: dict[str, list[tuple[str, ...]]] = {}
        for s in suffixes:
            if s:
                by_word.setdefault(s[0], []).append(s[1:])
        edges = tuple((w, build(rest)) for w, rest in sorted(by_word.items()))
        if not edges:
            return 0
        return registry.setdefault((() in suffixes, edges), len(registry) + 1)

    start = build(sentences)
    transitions: list[Transition] = []
    for (accepts, edges), state in registry.items():
        share = 1.0 / (len(edges) + accepts)
        transitions += [(state, dst, share, w) for w, dst in edges]
        if accepts:
            transitions.append((state, 0, share))
    return AnswerGraph(start, 0, transitions)


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else -99.0


def arpa_lm(
    texts: Iterable[str], order: int = 3, discount: float = 0.5, unigram_k: float = 1.0
) -> str:
    """A back-off n-gram LM over ``texts`` in ARPA format, normalized.

    Unigrams are add-``unigram_k`` smoothed over the whole vocabulary, so any word can
    follow any context. Seen n-grams keep their count minus ``discount``; the mass freed
    goes to the next lower order through back-off weights computed so that every
    context's distribution sums to one (Katz-style back-off, absolute discounting).
    """
    if not 0 < discount < 1:
        raise ValueError("discount must be in (0, 1)")
    if not 1 <= order <= 6:
        raise ValueError("order must be 1..6")
    sentences = [(BOS, *t.split(), EOS) for t in texts if t.split()]
    if not sentences:
        raise ValueError("an LM needs at least one non-empty text")
    counts = _ngram_counts(sentences, order)
    words = sorted(w for (w,) in counts[1])  # includes </s>
    total = sum(counts[1].values()) + unigram_k * len(words)
    probs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    probs[1] = {(w,): (counts[1][(w,)] + unigram_k) / total for w in words}
    bows: dict[tuple[str, ...], float] = {}

    def prob(h: tuple[str, ...], w: str) -> float:
        """P(w | h) under the model built so far (orders up to ``len(h) + 1``)."""
        if (*h, w) in probs[len(h) + 1]:
            return probs[len(h) + 1][(*h, w)]
        return bows.get(h, 1.0) * prob(h[1:], w)

    for n in range(2, order + 1):
        context_total: Counter[tuple[str, ...]] = Counter()
        followers: defaultdict[tuple[str, ...], list[str]] = defaultdict(list)
        for gram, c in counts[n].items():
            context_total[gram[:-1]] += c
            followers[gram[:-1]].append(gram[-1])
        probs[n] = {g: (c - discount) / context_total[g[:-1]] for g, c in counts[n].items()}
        # bow(h) spreads the freed mass over the words not seen after h, in proportion to
        # the lower order: 1 - (lower-order mass of the seen ones) is what those hold.
        for h, ws in followers.items():
            freed = discount * len(ws) / context_total[h]
            rest = 1.0 - sum(prob(h[1:], w) for w in ws)
            bows[h] = freed / rest if rest > 1e-12 else 1.0
    return _arpa_text(len(words), probs, bows, order)


def _ngram_counts(sentences: list[tuple[str, ...]], order: int) -> list[Counter[tuple[str, ...]]]:
    """Counts of every n-gram up to ``order`` (index n; 0 is unused)."""
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    for s in sentences:
        counts[1].update((w,) for w in s[1:])  # <s> is never predicted
        for n in range(2, order + 1):
            counts[n].update(s[i : i + n] for i in range(len(s) - n + 1))
    return counts


def _arpa_text(
    n_words: int,
    probs: list[dict[tuple[str, ...], float]],
    bows: dict[tuple[str, ...], float],
    order: int,
) -> str:
    """The ARPA text. <s> gets a unigram line all the same (log10 P of -99: it is never
    predicted) because that line is where its back-off weight is written."""
    lines = ["\\data\\", f"ngram 1={n_words + 1}"]
    lines += [f"ngram {n}={len(probs[n])}" for n in range(2, order + 1)]
    lines += ["", "\\1-grams:", f"-99.0000 {BOS} {_log10(bows.get((BOS,), 1.0)):.4f}"]
    for n in range(1, order + 1):
        if n > 1:
            lines += ["", f"\\{n}-grams:"]
        for gram, p in sorted(probs[n].items()):
            bow = bows.get(gram) if n < order else None
            tail = "" if bow is None else f" {_log10(bow):.4f}"
            lines.append(f"{_log10(p):.4f} {' '.join(gram)}{tail}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
