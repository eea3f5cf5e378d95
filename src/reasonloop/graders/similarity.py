"""Text similarity measures in [0, 1]: fuzzy ratio (rapidfuzz), sentence BLEU and ROUGE-L, written out.

BLEU follows Papineni et al. (2002) for one hypothesis and one reference:
geometric mean of modified n-gram precisions (n = 1..4) times the brevity
penalty. Sentence-level BLEU is zero whenever one order has no match, so orders
above 1 are add-one smoothed (Lin & Och 2004, "smoothing 2"); a pure unigram
miss still gives 0. ROUGE-L is the F1 of the longest common subsequence of
tokens (Lin 2004, beta = 1). Tokens are lower-cased words and punctuation marks.
"""

from __future__ import annotations

import math
import re
from collections import Counter

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks.

    >>> tokenize("The cat, sat!")
    ['the', 'cat', ',', 'sat', '!']
    """
    return TOKEN_RE.findall(text.lower())


def fuzzy_ratio(a: str, b: str) -> float:
    """Indel similarity (rapidfuzz `fuzz.ratio` / 100): 1 - edits / (len(a) + len(b)), edits = insertions + deletions.

    >>> fuzzy_ratio("kitten", "sitting")  # delete k,e; insert s,i,g: 1 - 5/13
    0.6153846153846154
    """
    from rapidfuzz import fuzz

    return fuzz.ratio(a, b) / 100.0


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    """Smoothed sentence BLEU of `hypothesis` against one `reference`.

    Hand-worked: hyp "the cat sat on the mat" (6 tokens), ref "the cat is on the mat" (6).
    Matches: 1-grams 5/6; 2-grams 3/5 (the cat, on the, the mat); 3-grams 1/4 (on the mat);
    4-grams 0/3. Smoothed: p1 = 5/6, p2 = 4/6, p3 = 2/5, p4 = 1/4; BP = 1.
    BLEU = (5/6 * 4/6 * 2/5 * 1/4) ** (1/4) = (1/18) ** 0.25 = 0.48549...

    >>> round(bleu("the cat sat on the mat", "the cat is on the mat"), 5)
    0.48549
    >>> bleu("the mat", "the cat is on the mat") < bleu("the cat is on mat", "the cat is on the mat")
    True
    >>> bleu("same words here", "same words here"), bleu("", "x"), bleu("dog", "cat")
    (1.0, 0.0, 0.0)
    """
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    if not hyp or not ref:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        matches = sum(min(c, r[g]) for g, c in h.items())
        total = max(len(hyp) - n + 1, 0)
        if n == 1 and matches == 0:
            return 0.0
        smooth = 0 if n == 1 else 1
        log_p += math.log((matches + smooth) / (total + smooth)) / max_n
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return min(1.0, brevity * math.exp(log_p))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory.

    >>> lcs_length(list("ABCBDAB"), list("BDCABA"))
    4
    """
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1: LCS-based precision P = lcs/|hyp|, recall R = lcs/|ref|, F = 2PR/(P+R).

    Hand-worked: hyp "police killed the gunman" vs ref "the gunman was killed by police"
    (Lin 2004's example, reversed): LCS = "the gunman" or "police ... ", length 2;
    P = 2/4, R = 2/6, F = 2 * (1/2 * 1/3) / (1/2 + 1/3) = 0.4.

    >>> rouge_l("police killed the gunman", "the gunman was killed by police")
    0.4
    >>> rouge_l("a b c", "a b c"), rouge_l("", "a")
    (1.0, 0.0)
    """
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    lcs = lcs_length(hyp, ref)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return 2 * p * r / (p + r)


METRICS = {"fuzzy_match": fuzzy_ratio, "bleu": bleu, "rouge_l": rouge_l}
