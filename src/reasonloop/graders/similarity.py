"""Text similarity metrics in [0, 1], each computed by the library the field uses for it (nothing hand-written).

| metric | library | how |
|---|---|---|
| `fuzzy_match` | rapidfuzz | `fuzz.ratio / 100` (Indel similarity of the two strings) |
| `bleu` | sacrebleu | `BLEU(effective_order=True).sentence_score / 100`: 13a tokens, exp smoothing |
| `gleu` | nltk | `sentence_gleu` (Google BLEU, Wu et al. 2016) over sacrebleu's 13a tokens |
| `meteor` | nltk | `meteor_score` over 13a tokens; synonyms from WordNet 3.0 (see `wordnet`) |
| `rouge_1`..`rouge_5`, `rouge_l` | rouge-score | `RougeScorer` F-measure, no stemming (the library's tokenizer) |
| `cosine` | transformers | mean-pooled last hidden states of a local encoder; `max(0, cos)` |

GLEU and METEOR take tokens: they get sacrebleu's 13a tokens (what BLEU
uses; nltk's own `word_tokenize` needs the punkt data, which is a download).
rouge-score's tokenizer keeps only `[a-z0-9]` runs, so text in other scripts
scores 0 under ROUGE: that is the library's behaviour, kept as it is.

METEOR's synonym stage needs WordNet 3.0: nltk's own copy (`nltk.download("wordnet")`)
if installed, else the directory in `$WNSEARCHDIR`, else Debian's `wordnet-base`
package (`/usr/share/wordnet`). With none of them METEOR still runs, on exact and
stem matches only, and every grade's reason says so (`meteor_wordnet()` is None).
nltk looks synonyms up for the Porter stems of the words left after the exact and
stem stages, so only words the stemmer leaves alone find theirs ("sick" and "ill"
match; "glad" and "happy", stemmed "happi", do not): nltk's behaviour, kept.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUGE_KEYS = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}
TEXT_METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", *ROUGE_KEYS)
METRICS = (*TEXT_METRICS, "cosine")  # cosine also needs an encoder directory

# WordNet 3.0's 45 lexicographer files, in order (lexnames(5WN)). Debian's wordnet-base leaves the `lexnames`
# file out, and nltk's reader opens it; METEOR never reads it, but the reader needs it to start.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
WORDNET_DIRS = ("/usr/share/wordnet",)  # Debian / Ubuntu: apt-get install wordnet-base


def tokens_13a(text: str) -> list[str]:
    """sacrebleu's 13a tokens (the WMT standard BLEU tokenisation), the input of GLEU and METEOR.

    >>> tokens_13a("The cat, sat!")
    ['The', 'cat', ',', 'sat', '!']
    """
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text).split()


def fuzzy_ratio(a: str, b: str) -> float:
    """rapidfuzz `fuzz.ratio` / 100: 1 - edits / (len(a) + len(b)), edits = insertions + deletions.

    >>> fuzzy_ratio("kitten", "sitting")  # delete k,e; insert s,i,g: 1 - 5/13
    0.6153846153846154
    """
    from rapidfuzz import fuzz

    return fuzz.ratio(a, b) / 100.0


@functools.lru_cache(maxsize=1)
def _bleu_metric() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses: orders above the sentence length drop out


def bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu sentence BLEU / 100.

    Hand-worked: hyp "the cat sat on the mat" against "the cat is on the mat" (6 tokens each):
    matches 5/6, 3/5, 1/4, 0/3; exp smoothing turns the first zero into 1 / (2 * 3);
    BP = 1; BLEU = (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = (1/48) ** 0.25 = 0.37992...

    >>> round(bleu("the cat sat on the mat", "the cat is on the mat"), 5), round((1 / 48) ** 0.25, 5)
    (0.37992, 0.37992)
    >>> bleu("same words here", "same words here"), bleu("", "x")  # sacrebleu says 1.0000000000000004 for the first
    (1.0, 0.0)
    """
    return min(1.0, _bleu_metric().sentence_score(hypothesis, [reference]).score / 100.0)


def gleu(hypothesis: str, reference: str) -> float:
    """nltk `sentence_gleu`: min(precision, recall) of all 1..4-grams pooled.

    Hand-worked: the pair above has 6 + 5 + 4 + 3 = 18 n-grams a side, 5 + 3 + 1 + 0 = 9 shared: 9 / 18.

    >>> gleu("the cat sat on the mat", "the cat is on the mat")
    0.5
    """
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([tokens_13a(reference)], tokens_13a(hypothesis)))


class _NoSynonyms:
    """Stands in for WordNet when there is none: METEOR's synonym stage finds nothing."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


@functools.lru_cache(maxsize=1)
def meteor_wordnet() -> Any:
    """The WordNet METEOR uses (nltk's, `$WNSEARCHDIR`'s or Debian's), loaded once per process; None without one."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        pass
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class DictDirReader(WordNetCorpusReader):
        """A plain WordNet 3.0 `dict` directory (the format nltk's copy is in, minus `lexnames`)."""

        def open(self, fileid: str) -> Any:
            if fileid == "lexnames" and not (Path(self.root.path) / fileid).exists():
                return io.StringIO("".join(f"{i:02d}\t{name}\t0\n" for i, name in enumerate(LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version: str = "wordnet") -> None:
            return None  # this is WordNet 3.0 itself; the mapping serves the multilingual data, unused here

    for d in [os.environ.get("WNSEARCHDIR", ""), *WORDNET_DIRS]:
        if d and (Path(d) / "data.noun").is_file():
            nltk.data.path.append(d)  # nltk reads only from its data path
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed
                return DictDirReader(d, None)
    return None


def meteor(hypothesis: str, reference: str) -> float:
    """nltk `meteor_score` (alpha 0.9, beta 3, gamma 0.5; lower-cased, Porter stems, WordNet synonyms).

    Hand-worked: "a b c" against itself matches all 3 words in 1 chunk: Fmean = 1, penalty = 0.5 * (1/3) ** 3.

    >>> round(meteor("a b c", "a b c"), 12), round(1 - 0.5 / 27, 12), meteor("", "a b")
    (0.981481481481, 0.981481481481, 0.0)
    """
    from nltk.translate.meteor_score import meteor_score

    hyp, ref = tokens_13a(hypothesis), tokens_13a(reference)
    if not hyp or not ref:
        return 0.0  # nltk divides by zero on an empty side
    wordnet = meteor_wordnet() or _NoSynonyms()
    return float(meteor_score([ref], hyp, wordnet=wordnet))


@functools.cache
def _rouge_scorer(*keys: str) -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(keys), use_stemmer=False)


def rouge(hypothesis: str, reference: str) -> dict[str, float]:
    """rouge-score F-measures, keyed `rouge_1`..`rouge_5`, `rouge_l`.

    Hand-worked (Lin 2004's example, reversed): "police killed the gunman" vs "the gunman was killed by police":
    LCS 2 ("the gunman"), P = 2/4, R = 2/6, F = 0.4; unigrams shared 4, F = 2 * (4/4 * 4/6) / (4/4 + 4/6) = 0.8.

    >>> r = rouge("police killed the gunman", "the gunman was killed by police")
    >>> round(r["rouge_l"], 12), round(r["rouge_1"], 12), r["rouge_2"]  # bigram "the gunman": P 1/3, R 1/5
    (0.4, 0.8, 0.25)
    """
    scores = _rouge_scorer(*ROUGE_KEYS.values()).score(reference, hypothesis)  # rouge-score: (target, prediction)
    return {ours: scores[theirs].fmeasure for ours, theirs in ROUGE_KEYS.items()}


def _rouge_one(key: str) -> Callable[[str, str], float]:
    theirs = ROUGE_KEYS[key]

    def score(hypothesis: str, reference: str) -> float:
        return _rouge_scorer(theirs).score(reference, hypothesis)[theirs].fmeasure

    score.__name__ = key
    return score


TEXT_METRIC_FNS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_ratio,
    "bleu": bleu,
    "gleu": gleu,
    "meteor": meteor,
    **{key: _rouge_one(key) for key in ROUGE_KEYS},
}


def check_encoder_dir(directory: str) -> str | None:
    """Why `directory` cannot be an encoder (no config.json, no tokenizer), or None.

    >>> check_encoder_dir("/nonexistent")
    'is not a directory'
    """
    p = Path(directory)
    if not p.is_dir():
        return "is not a directory"
    if not (p / "config.json").is_file():
        return "has no config.json (a Hugging Face model directory is expected)"
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return "has no tokenizer (tokenizer.json, tokenizer_config.json or vocab.txt)"
    return None


@functools.lru_cache(maxsize=2)
def _encoder(directory: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory)
    model.eval()
    return tokenizer, model


def cosine(hypothesis: str, reference: str, encoder_dir: str) -> float:
    """max(0, cos) of the two texts' embeddings: the encoder's last hidden states averaged over real tokens."""
    import torch

    tokenizer, model = _encoder(encoder_dir)
    batch = tokenizer([hypothesis, reference], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (2, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (2, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (2, H)
    cos = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0).item()
    return min(1.0, max(0.0, cos))
