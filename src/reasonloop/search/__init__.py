"""Layer 4: test-time search as pure functions. Selection rules today; beam, MCTS and ToT to come."""

from reasonloop.search.vote import best_of_n, majority_vote, weighted_vote

__all__ = ["best_of_n", "majority_vote", "weighted_vote"]
