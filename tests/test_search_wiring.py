"""`solve` and `solve_sampling` wiring: what each strategy is given for a budget, what the generator and the
verifier are asked, and what the outcome reports. The strategies are replaced by spies returning canned
results, so every argument and every reported number is checked against values worked out here."""

from __future__ import annotations

import pytest

from reasonloop.core import Problem, Sample
from reasonloop.search import solve as solve_module
from reasonloop.search.beam import BeamResult
from reasonloop.search.dvts import DvtsResult
from reasonloop.search.mcts import MctsResult
from reasonloop.search.solve import solve, solve_sampling
from reasonloop.search.tot import TotResult
from reasonloop.tasks import ArithTask

TASK = ArithTask()
P = Problem("p", "Q: 1+2\n", "3")
Q = Problem("q", "Q: 2*2\n", "4")


class Recorder:
    """A generator whose every sample is given by `script(prompt, i)`; `token_ids` are one per character."""

    def __init__(self, script=lambda prompt, i: "1+2=3"):
        self.script, self.calls = script, []

    def generate(self, prompts, n, **kw):
        self.calls.append((list(prompts), n, kw))
        return [
            [Sample("", (t := self.script(p, i)), token_ids=list(range(len(t))), meta={"finish_reason": "stop"})
             for i in range(n)]
            for p in prompts
        ]  # fmt: skip


class Verifier:
    """Scores a solution by its number of steps (plus `bonus` for a given text); counts 10 tokens per solution."""

    def __init__(self, bonus=None):
        self.tokens_scored, self.calls, self.bonus = 0, [], bonus or {}

    def score_prefixes(self, prompts, prefixes):
        self.calls.append(("prefixes", list(prompts), [list(p) for p in prefixes]))
        self.tokens_scored += 10 * len(prefixes)
        return [float(len(p)) for p in prefixes]

    def score_many(self, prompts, solutions):
        self.calls.append(("many", list(prompts), [list(s) for s in solutions]))
        self.tokens_scored += 10 * len(solutions)
        return [self.bonus.get("\n".join(s), 0.0) for s in solutions]


def spy(name, result, seen):
    """A stand-in for a search function: records its keyword arguments, calls expand and score once, returns `result`."""

    def fn(expand, score, **kw):
        seen.update(strategy=name, kw=kw, expanded=expand([["1+2=3"]], 2), scored=score([["1+2=3"], []]))
        return result

    return fn


FINISHED = ["1+2=3", "A: 3"]
RESULTS = {
    "beam": ("beam_search", BeamResult(FINISHED, 0.9, True, [(FINISHED, 0.9), (["A: 4"], 0.1)], 7, 3)),
    "tot_bfs": ("tot_bfs", TotResult(FINISHED, 0.9, True, [(["1+2=3"], 0.5)], 7, 3)),
    "tot_dfs": ("tot_dfs", TotResult(FINISHED, 0.9, True, [(["1+2=3"], 0.5)], 7, 3)),
    "mcts": ("mcts", MctsResult(FINISHED, 0.9, True, [((), 4, 0.5), (("1+2=3",), 3, 0.6)], 7, 3)),
    "dvts": ("dvts", DvtsResult(FINISHED, 0.9, True, [BeamResult(FINISHED, 0.9, True), BeamResult(["A: 4"], 0.2, True)], 7, 3)),
}  # fmt: skip
KEPT = {
    "beam": [["1+2=3\nA: 3", 0.9], ["A: 4", 0.1]],
    "tot_bfs": [["1+2=3", 0.5]],
    "tot_dfs": [["1+2=3", 0.5]],
    "mcts": [["", 4, 0.5], ["1+2=3", 3, 0.6]],
    "dvts": [["1+2=3\nA: 3", 0.9], ["A: 4", 0.2]],
}


def expected_kwargs(strategy: str, budget: int, max_depth: int, lookahead: int, seed: int) -> dict:
    k = 4 if budget >= 4 else budget  # 4 expansions, fewer below a budget of 4
    width = max(1, budget // 4)
    return {
        "beam": {"beam_width": width, "expansions": k, "max_depth": max_depth, "lookahead": lookahead},
        "dvts": {"budget": width * k, "beam_width": k, "max_depth": max_depth},
        "mcts": {"simulations": 4 * budget, "expansions": k, "max_depth": max_depth, "seed": seed},
        "tot_bfs": {"breadth": width, "expansions": k, "max_depth": max_depth},
        "tot_dfs": {"expansions": k, "threshold": 0.5, "max_depth": max_depth, "max_nodes": 2 * budget},
    }[strategy]


@pytest.mark.parametrize("strategy", list(RESULTS))
@pytest.mark.parametrize("budget", [1, 3, 4, 7, 16])
def test_each_tree_search_gets_its_share_of_the_budget_and_reports_what_it_found(strategy, budget, monkeypatch):
    name, result = RESULTS[strategy]
    seen: dict = {}
    monkeypatch.setattr(solve_module, name, spy(strategy, result, seen))
    gen, ver = Recorder(), Verifier()
    out = solve(
        P, TASK, gen, ver, strategy, budget, temperature=0.7, max_new_tokens=33, max_depth=5, lookahead=2, seed=9
    )
    assert seen["kw"] == expected_kwargs(strategy, budget, 5, 2, 9)
    # expand asks the generator for k next steps of each prefix, one step at a time, with the caller's settings
    assert gen.calls == [
        (["Q: 1+2\n1+2=3\n"], 2, {"temperature": 0.7, "max_new_tokens": 33, "stop": ["\n"], "seed": 9})
    ]
    assert seen["expanded"] == [[("1+2=3", False, 5), ("1+2=3", False, 5)]]
    # score asks the verifier for the value of each partial solution of this problem
    assert ver.calls == [("prefixes", [P.prompt, P.prompt], [["1+2=3"], []])] and seen["scored"] == [1.0, 0.0]
    assert (out.answer, out.text, out.generator_tokens, out.verifier_tokens, out.finished) == (
        "3", "1+2=3\nA: 3", 7, 20, True,
    )  # fmt: skip
    assert out.kept == KEPT[strategy]


def test_solve_defaults_and_a_second_expand_call_gets_a_new_seed(monkeypatch):
    seen: dict = {}

    def beam(expand, score, **kw):
        seen.update(kw=kw)
        expand([[]], 1)
        expand([[]], 1)
        return RESULTS["beam"][1]

    monkeypatch.setattr(solve_module, "beam_search", beam)
    gen = Recorder()
    solve(P, TASK, gen, Verifier(), "beam", 4)
    assert seen["kw"] == {"beam_width": 1, "expansions": 4, "max_depth": 12, "lookahead": 0}
    assert [c[2] for c in gen.calls] == [
        {"temperature": 1.0, "max_new_tokens": 96, "stop": ["\n"], "seed": 0},
        {"temperature": 1.0, "max_new_tokens": 96, "stop": ["\n"], "seed": 1},
    ]


def test_an_unfinished_search_is_completed_greedily_and_pays_for_it(monkeypatch):
    partial = TotResult(["1+2=3"], 0.4, False, [], 6, 2)
    monkeypatch.setattr(solve_module, "tot_bfs", lambda expand, score, **kw: partial)
    gen = Recorder(lambda prompt, i: "A: 3")
    out = solve(P, TASK, gen, Verifier(), "tot_bfs", 4, max_new_tokens=21)
    # the best partial solution's steps, then one greedy completion of the rest
    assert gen.calls == [(["Q: 1+2\n1+2=3\n"], 1, {"temperature": 0.0, "max_new_tokens": 21})]
    assert (out.text, out.answer, out.generator_tokens, out.finished) == ("1+2=3\nA: 3", "3", 6 + 4, False)


def test_sampling_strategies_through_solve_and_in_batches():
    texts = {0: "1+2=3\nA: 3", 1: "1+2=4\nA: 4", 2: "1+2=4\nA: 4", 3: "no answer"}
    gen = Recorder(lambda prompt, i: texts[i])
    maj = solve(P, TASK, gen, None, "majority", 4, temperature=0.3, max_new_tokens=17, seed=5)
    assert gen.calls == [([P.prompt], 4, {"temperature": 0.3, "max_new_tokens": 17, "seed": 5})]
    assert (maj.answer, maj.text, maj.verifier_tokens, maj.kept) == ("4", texts[1], 0, ["3", "4", "4", None])
    assert maj.generator_tokens == sum(len(t) for t in texts.values()) and maj.finished
    none = solve(P, TASK, Recorder(lambda prompt, i: "nothing"), None, "majority", 2)
    assert (none.answer, none.text) == (None, "nothing")  # no answer anywhere: the first sample's text
    ver = Verifier(bonus={"1+2=3\nA: 3": 0.9, "1+2=4\nA: 4": 0.6})
    best = solve(P, TASK, gen, ver, "best_of_n", 4)
    assert (best.answer, best.text, best.verifier_tokens) == ("3", texts[0], 40)
    assert best.kept == [("3", 0.9), ("4", 0.6), ("4", 0.6), (None, 0.0)]
    assert ver.calls[-1] == (
        "many",
        [P.prompt] * 4,
        [["1+2=3", "A: 3"], ["1+2=4", "A: 4"], ["1+2=4", "A: 4"], ["no answer"]],
    )
    vote = solve(P, TASK, gen, Verifier(bonus={"1+2=3\nA: 3": 0.9, "1+2=4\nA: 4": 0.6}), "weighted_vote", 4)
    assert (vote.answer, vote.text, vote.verifier_tokens) == ("4", texts[1], 40)  # 0.6 + 0.6 > 0.9
    # two problems in one generator call; each problem's verifier tokens are its own
    gen2 = Recorder(lambda prompt, i: "A: 3" if prompt == P.prompt else "x\nA: 4")
    outs = solve_sampling([P, Q], TASK, gen2, Verifier(), "best_of_n", 3)
    assert len(gen2.calls) == 1 and [o.verifier_tokens for o in outs] == [30, 30]
    assert [o.answer for o in outs] == ["3", "4"] and [o.generator_tokens for o in outs] == [12, 18]
    with pytest.raises(ValueError, match="^solve_sampling handles majority, best_of_n, weighted_vote, not 'beam'$"):
        solve_sampling([P], TASK, gen2, Verifier(), "beam", 2)
    with pytest.raises(ValueError, match="^strategy 'best_of_n' needs a verifier$"):
        solve_sampling([P], TASK, gen2, None, "best_of_n", 2)


def test_solve_argument_errors():
    gen = Recorder()
    with pytest.raises(
        ValueError,
        match="^unknown strategy 'astar'; expected one of majority, best_of_n, weighted_vote, beam, dvts, mcts, tot_bfs, tot_dfs$",
    ):
        solve(P, TASK, gen, Verifier(), "astar", 4)
    with pytest.raises(ValueError, match="^strategy 'beam' needs a verifier$"):
        solve(P, TASK, gen, None, "beam", 4)
    with pytest.raises(ValueError, match="^budget must be at least 1$"):
        solve(P, TASK, gen, Verifier(), "majority", 0)
    assert solve(P, TASK, gen, None, "majority", 1).generator_tokens == 5  # a budget of 1 is allowed


def test_generator_expand_defaults_and_prompt_layout():
    from reasonloop.search.beam import generator_expand

    gen = Recorder(lambda prompt, i: "x")
    expand = generator_expand(gen, "Q:")
    assert expand([["a", "b"], []], 2) == [[("x", False, 1)] * 2] * 2
    expand([["c"]], 1)
    assert gen.calls == [
        (["Q:a\nb\n", "Q:"], 2, {"temperature": 1.0, "max_new_tokens": 64, "stop": ["\n"], "seed": 0}),
        (["Q:c\n"], 1, {"temperature": 1.0, "max_new_tokens": 64, "stop": ["\n"], "seed": 1}),  # a new seed per call
    ]


def test_solve_uses_the_task_delimiter_completes_long_partials_and_sampling_defaults(monkeypatch):
    class Semicolon:  # arith with ";" between steps
        step_delimiter = ";"

        def extract_answer(self, text):
            return TASK.extract_answer(text.replace(";", "\n"))

    seen: dict = {}
    monkeypatch.setattr(
        solve_module, "tot_bfs", spy("tot_bfs", TotResult(["1+2=3", "3*1=3"], 0.4, False, [], 6, 2), seen)
    )
    gen = Recorder(lambda prompt, i: "A: 3")
    out = solve(P, Semicolon(), gen, Verifier(), "tot_bfs", 4)
    assert gen.calls[0][0] == ["Q: 1+2\n1+2=3;"] and gen.calls[0][2]["stop"] == [";"]  # expand uses the delimiter
    assert gen.calls[1][0] == ["Q: 1+2\n1+2=3;3*1=3;"]  # the greedy completion of a two-step partial solution
    assert out.text == "1+2=3;3*1=3;A: 3" and out.answer == "3"
    gen = Recorder()
    solve_sampling([P], TASK, gen, None, "majority", 2)
    assert gen.calls[0][2] == {"temperature": 1.0, "max_new_tokens": 96, "seed": 0}
    vote = solve_sampling([P], TASK, Recorder(lambda p, i: ["A: 3", "A: 4"][i]), Verifier(), "weighted_vote", 2)[0]
    assert vote.kept == [("3", 0.0), ("4", 0.0)] and vote.answer == "3"
