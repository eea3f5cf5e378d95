"""Layer 4: test-time search as pure functions: selection rules, step-level beam search, DVTS, MCTS and ToT."""

from reasonloop.search.beam import BeamResult, beam_search, generator_expand
from reasonloop.search.dvts import DvtsResult, dvts
from reasonloop.search.mcts import MctsResult, mcts
from reasonloop.search.tot import TotResult, tot_bfs, tot_dfs
from reasonloop.search.vote import best_of_n, majority_vote, weighted_vote, weighted_vote_pick

__all__ = [
    "BeamResult",
    "DvtsResult",
    "MctsResult",
    "TotResult",
    "beam_search",
    "best_of_n",
    "dvts",
    "generator_expand",
    "majority_vote",
    "mcts",
    "tot_bfs",
    "tot_dfs",
    "weighted_vote",
    "weighted_vote_pick",
]
