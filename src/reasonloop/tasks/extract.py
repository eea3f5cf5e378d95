"""`extract`: a built-in world of structured extraction, short texts to JSON objects of their fields.

A problem is a generated sentence about a person or an order, in one of several
phrasings, and its answer is the JSON object of its fields (keys in a fixed
order, written compactly, as the canonical solution writes it)::

    Q: Ada Moss from Lyon ordered a lamp and a rug in 2019. Urgent.
    {"name":"Ada Moss","city":"Lyon","year":2019,"items":["lamp","rug"],"priority":"high"}

    Q: Born 1984 in Oslo, Tom Vale is a baker.
    {"name":"Tom Vale","city":"Oslo","year":1984,"job":"baker"}

This is the task reinforcement fine-tuning is sold on: a few dozen graded
examples of a format the base half knows. The world's own grade is the
field-level F1 of the extracted object (as the `json_fields` grader scores
it: list fields count one item per element, strings compare case-folded), so a half-right object earns partial credit;
`is_correct` asks for every field. `examples/graders/extract.yaml` is the
OpenAI-style multi grader (field F1 plus an exact check of the name) the RFT
example uses. Problems go to train or test by a hash of their text.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from reasonloop.core import Grade, Problem, bounded
from reasonloop.core.grading import extract_json, prf
from reasonloop.tasks.base import WorldTask

FIRST = (
    "Ada Ben Cleo Dan Eva Finn Gus Hana Ivo Jade Kai Lena Milo Nora Omar Pia Quin Rosa Sam Tara Ugo Vera Wes Yara Zoe"
).split()
LAST = "Moss Vale Reed Hart Lund Cruz Nash Pike Rowe Shaw Todd Webb Bloom Frost Gray Hale Kerr Lowe Marsh Price".split()
CITIES = "Lyon Oslo Porto Riga Kyiv Bern Turin Graz Split Cork Leeds Ghent Brno Malmo Lille Bonn".split()
JOBS = "baker nurse pilot tailor farmer singer lawyer welder miner chef judge poet".split()
ITEMS = "lamp rug desk chair kettle clock mirror sofa vase shelf stool fan".split()
PRIORITY = {
    "high": ("Urgent.", "Rush order."),
    "normal": ("Standard delivery.", "Usual pace."),
    "low": ("No hurry.", "Ship when free."),
}
ORDER_TEMPLATES = (
    "{name} from {city} ordered {items} in {year}. {prio}",
    "Order of {year}: {items} for {name}, {city}. {prio}",
    "{prio} {name} ({city}) bought {items} in {year}.",
)
PERSON_TEMPLATES = (
    "{name} was born in {city} in {year} and works as a {job}.",
    "Born {year} in {city}, {name} is a {job}.",
    "{name}, a {job} from {city}, born {year}.",
)
KINDS = ("order", "person")


@dataclass(frozen=True)
class ExtractConfig:
    """Knobs of the extraction world."""

    kinds: str = "order+person"  # which kinds of text appear: order, person, or both joined by "+"
    max_items: int = bounded(3, ge=1, le=len(ITEMS))  # most items in an order
    test_fraction: float = bounded(0.2, gt=0, lt=1)  # share of the text space that is test-only

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds.split("+") if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds: expected order, person or order+person, got {self.kinds!r}")


def _item_phrase(items: list[str]) -> str:
    """English for a list of items.

    >>> _item_phrase(["lamp"]), _item_phrase(["lamp", "rug"]), _item_phrase(["lamp", "rug", "fan"])
    ('a lamp', 'a lamp and a rug', 'a lamp, a rug and a fan')
    """
    words = [f"a {item}" for item in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def random_record(rng: random.Random, cfg: ExtractConfig) -> tuple[str, dict]:
    """One text and its fields (keys in the canonical order)."""
    kind = rng.choice(cfg.kinds.split("+"))
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    city = rng.choice(CITIES)
    if kind == "order":
        year = rng.randint(2010, 2024)
        items = rng.sample(ITEMS, rng.randint(1, cfg.max_items))
        priority = rng.choice(list(PRIORITY))
        text = rng.choice(ORDER_TEMPLATES).format(
            name=name, city=city, year=year, items=_item_phrase(items), prio=rng.choice(PRIORITY[priority])
        )
        return text, {"name": name, "city": city, "year": year, "items": items, "priority": priority}
    year = rng.randint(1950, 2005)
    job = rng.choice(JOBS)
    text = rng.choice(PERSON_TEMPLATES).format(name=name, city=city, year=year, job=job)
    return text, {"name": name, "city": city, "year": year, "job": job}


def canonical_json(fields: dict) -> str:
    """The compact JSON the world's solutions write.

    >>> canonical_json({"name": "Ada Moss", "year": 2019, "items": ["lamp"]})
    '{"name":"Ada Moss","year":2019,"items":["lamp"]}'
    """
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def _items(obj: dict, fields: list[str]) -> set[tuple[str, str]]:
    """(field, value) items of the named fields; a list gives one item per element; strings case-folded.

    >>> sorted(_items({"name": "Ada", "items": ["lamp", "rug"], "year": 2019}, ["name", "items"]))
    [('items', '"lamp"'), ('items', '"rug"'), ('name', '"ada"')]
    """
    out = set()
    for f in fields:
        values = obj.get(f)
        for v in values if isinstance(values, list) else [values]:
            if v is not None:
                v = " ".join(v.split()).casefold() if isinstance(v, str) else v
                out.add((f, json.dumps(v, sort_keys=True)))
    return out


class ExtractTask(WorldTask):
    name = "extract"
    max_solution_tokens = 128

    def __init__(self, config: ExtractConfig | None = None):
        self.config = config or ExtractConfig()

    def problems(self, split: str = "test", n: int = 100, seed: int = 0) -> list[Problem]:
        """`n` distinct problems of `split`, drawn deterministically from `seed`."""

        def draw(rng: random.Random):
            text, fields = random_record(rng, self.config)
            answer = canonical_json(fields)
            return text, lambda: Problem(
                id=f"extract-{hashlib.sha1(text.encode()).hexdigest()[:10]}",
                prompt=f"Q: {text}\n",
                answer=answer,
                meta={
                    "kind": "order" if "items" in fields else "person",
                    "hint_prompt": f"Q: {text} (fields {', '.join(fields)})\n",
                    "solution": answer,
                    "source": "extract",
                },
            )

        return self.distinct_problems(split, n, seed, draw)

    def facts(self, n: int, seed: int = 0) -> list[str]:
        """`n` texts of the world without their fields (a "pretraining" corpus of its phrasings and names).

        >>> ExtractTask().facts(1, seed=3)
        ['Rosa Webb, a welder from Ghent, born 1996.']
        """
        rng = random.Random(f"extract/facts/{seed}")
        return [random_record(rng, self.config)[0] for _ in range(n)]

    def extract_answer(self, completion: str) -> str | None:
        """The completion's JSON object in canonical form, or None.

        >>> ExtractTask().extract_answer('{"name": "Ada", "year": 1843}'), ExtractTask().extract_answer("no json")
        ('{"name":"Ada","year":1843}', None)
        """
        obj, _ = extract_json(completion)
        return None if obj is None else canonical_json(obj)

    def grade(self, problem: Problem, completion: str) -> Grade:
        """Field-level F1 against the answer (1.0 exactly when every field is right and nothing is missing).

        >>> p = Problem("x", "Q: ...", '{"name":"Ada Moss","year":2019,"items":["lamp","rug"]}')
        >>> ExtractTask().grade(p, '{"name":"Ada Moss","year":2019,"items":["lamp"]}').score  # P 3/3, R 3/4
        0.8571428571428571
        """
        pred, why = extract_json(completion)
        if pred is None:
            return Grade(0.0, None, why)
        ref = json.loads(problem.answer)
        p, r, f1 = prf(_items(pred, list(ref)), _items(ref, list(ref)))
        return Grade(f1, canonical_json(pred), f"precision {p:.2f} recall {r:.2f} f1 {f1:.2f}",
                     {"precision": p, "recall": r, "f1": f1})  # fmt: skip

    def is_correct(self, problem: Problem, completion: str) -> bool:
        """Every field of the answer is extracted (list fields as sets); extra keys are ignored."""
        return self.grade(problem, completion).score == 1.0
