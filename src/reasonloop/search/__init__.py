"""Layer 4: test-time search as pure functions: selection rules and step-level beam search (MCTS, ToT to come)."""

from reasonloop.search.beam import BeamResult, beam_search, generator_expand
from reasonloop.search.vote import best_of_n, majority_vote, weighted_vote

__all__ = ["BeamResult", "beam_search", "best_of_n", "generator_expand", "majority_vote", "weighted_vote"]
