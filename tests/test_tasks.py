import pytest

from reasonloop.core import ConfigError, DataError
from reasonloop.tasks import ArithConfig, ArithTask, CountdownTask, JsonlTask, get_task, hash_split
from reasonloop.tasks.arith import step_arithmetic_is_right


def test_arith_canonical_solutions_are_correct_and_exact():
    task = ArithTask()
    for p in task.problems("test", 200, seed=1):
        steps = task.steps(p.meta["solution"])
        assert task.is_correct(p, p.meta["solution"])
        assert all(task.step_labels(p, steps))
        assert task.first_error(p, steps) is None
        assert len(steps) == p.meta["n_ops"] + 1
        assert p.answer in p.meta["hint_prompt"]


def test_arith_left_to_right_semantics():
    task = ArithTask()
    from reasonloop.tasks.arith import parse_expression

    p = task.problem_from_chain(parse_expression("12+7*3-5"))
    assert p.answer == "52"  # ((12+7)*3)-5, not 12+21-5
    assert p.meta["solution"] == "12+7=19\n19*3=57\n57-5=52\nA: 52"


def test_arith_step_labels_find_first_error():
    task = ArithTask()
    from reasonloop.tasks.arith import parse_expression

    p = task.problem_from_chain(parse_expression("12+7*3-5"))
    # arithmetic slip at step 1; later steps are consistent with the wrong value
    assert task.step_labels(p, ["12+7=19", "19*3=56", "56-5=51", "A: 51"]) == [True, False, True, True]
    # wrong operand copied from the problem
    assert task.first_error(p, ["12+7=19", "19*4=76", "76-5=71", "A: 71"]) == 1
    # answer that does not match the last value, and a missing step
    assert task.first_error(p, ["12+7=19", "19*3=57", "57-5=52", "A: 50"]) == 3
    assert task.first_error(p, ["12+7=19", "19*3=57", "A: 57"]) == 2
    assert not task.is_correct(p, "12+7=19\n19*3=57\n57-5=52\nA: 50")
    assert step_arithmetic_is_right("19*3=57") and not step_arithmetic_is_right("19*3=58")


def test_arith_splits_never_overlap_and_are_deterministic():
    task = ArithTask()
    train = {p.prompt for seed in range(3) for p in task.problems("train", 500, seed=seed)}
    test = {p.prompt for seed in range(3) for p in task.problems("test", 300, seed=seed)}
    assert not train & test
    assert all(hash_split(p.removeprefix("Q: ").strip()) == "test" for p in test)
    assert [p.id for p in task.problems("test", 20, seed=7)] == [p.id for p in task.problems("test", 20, seed=7)]
    assert len({p.id for p in task.problems("test", 300, seed=0)}) == 300


def test_arith_knobs():
    task = ArithTask(ArithConfig(min_ops=5, max_ops=5, operators="+", operand_max=3, start_max=3))
    for p in task.problems("train", 20):
        assert p.meta["n_ops"] == 5 and "*" not in p.prompt and "-" not in p.prompt.removeprefix("Q: ")
    with pytest.raises(ConfigError, match="operators"):
        get_task("arith", operators="^")
    with pytest.raises(ConfigError, match="unknown key 'max_opz'"):
        get_task("arith", max_opz=3)


def test_countdown_checker():
    task = CountdownTask()
    problems = task.problems("test", 100)
    for p in problems:
        assert task.is_correct(p, p.meta["solution"]), p
    p = next(q for q in problems if len(q.meta["numbers"]) == 4)
    a, b = p.meta["numbers"][:2]
    # reusing a number beyond its count is illegal
    assert not task.is_correct(p, f"{a}+{a}={2 * a}\n{a}+{a}={2 * a}\n{2 * a}+{2 * a}={4 * a}\nA: {4 * a}")
    # a wrong answer line fails even with legal steps
    assert not task.is_correct(p, f"{a}+{b}={a + b}\nA: {a + b + 1}")
    # inexact division is illegal
    from reasonloop.core import Problem

    q = Problem("x", "Q: 3 from 7 2 1\n", "3", {"numbers": [1, 2, 7]})
    assert not task.is_correct(q, "7/2=3\nA: 3")
    assert task.is_correct(q, "2+1=3\nA: 3")


def test_countdown_has_many_solutions():
    from reasonloop.core import Problem

    task = CountdownTask()
    p = Problem("x", "Q: 24 from 3 4 6 8\n", "24", {"numbers": [3, 4, 6, 8]})
    for sol in ["6*4=24\nA: 24", "8*3=24\nA: 24", "8-6=2\n4*3=12\n12*2=24\nA: 24"]:
        assert task.is_correct(p, sol)


def test_task_spec_carries_world_options():
    task = get_task("countdown:n_numbers=3, number_max=9")
    assert task.config.n_numbers == 3 and task.config.number_max == 9
    assert all(len(p.meta["numbers"]) == 3 and max(p.meta["numbers"]) <= 9 for p in task.problems("train", 50))
    # explicit options win over the spec's
    assert get_task("countdown:n_numbers=3", n_numbers=4).config.n_numbers == 4
    with pytest.raises(ConfigError, match="bad part 'n_numbers'"):
        get_task("countdown:n_numbers")
    with pytest.raises(ConfigError, match="countdown options: unknown key 'n_number'"):
        get_task("countdown:n_number=3")


def test_countdown_facts_are_legal_operations():
    from reasonloop.tasks.arith import OPS, STEP_RE

    task = get_task("countdown:n_numbers=3,number_max=9,target_max=100")
    facts = task.facts(300, seed=2)
    assert len(facts) == 300 and facts == task.facts(300, seed=2) and facts != task.facts(300, seed=3)
    for fact in facts:
        a, op, b, c = STEP_RE.match(fact).groups()
        assert OPS[op](int(a), int(b)) == int(c) and 0 < int(c) <= 100, fact


def test_countdown_first_error_is_the_step_that_loses_the_target():
    from reasonloop.tasks.countdown import reachable

    task = get_task("countdown:n_numbers=3,number_max=9,target_max=100")
    for p in task.problems("test", 60):
        assert reachable(tuple(p.meta["numbers"]), p.meta["target"])
        assert task.first_error(p, task.steps(p.meta["solution"])) is None
    from reasonloop.core import Problem

    p = Problem("x", "Q: 24 from 3 4 6 8\n", "24", {"numbers": [3, 4, 6, 8]})
    # 8-6=2 keeps 24 in reach (2*3*4); 2+3=5 leaves 4 and 5, which cannot make 24
    assert task.first_error(p, ["8-6=2", "2+3=5", "5*4=20", "A: 20"]) == 1
    assert task.first_error(p, ["8-6=2", "2*3=6", "6*4=24", "A: 24"]) is None
    assert task.first_error(p, ["3*9=27"]) == 0  # illegal: 9 is not given
    assert task.first_error(p, ["6*4=24", "A: 25"]) == 1  # the answer line states the wrong value


def test_gsm8k_file(shared_data):
    task = get_task("gsm8k", data=str(shared_data / "gsm8k" / "test.jsonl"))
    problems = task.problems()
    assert len(problems) == 1319
    assert problems[0].answer == "18"
    assert all(task.is_correct(p, p.meta["solution"]) for p in problems)


def test_math_file(shared_data):
    task = get_task("math", data=str(shared_data / "math500" / "test.jsonl"))
    problems = task.problems()
    assert len(problems) == 500
    assert problems[0].id == "test/precalculus/807.json"
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert "\\boxed" in problems[0].meta["solution"]


def test_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q" "answer": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        JsonlTask(bad, "gsm8k").problems()
    bad.write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field 'answer'"):
        JsonlTask(bad, "gsm8k").problems()
    bad.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*'#### <answer>'"):
        JsonlTask(bad, "gsm8k").problems()
    bad.write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q", "ans')
    with pytest.raises(DataError, match=r"bad.jsonl:2: last line is incomplete"):
        JsonlTask(bad, "gsm8k").problems()


def test_unknown_task_and_missing_data():
    with pytest.raises(ConfigError, match="unknown task 'arithh'.*did you mean 'arith'"):
        get_task("arithh")
    with pytest.raises(ConfigError, match="--data"):
        get_task("gsm8k")
