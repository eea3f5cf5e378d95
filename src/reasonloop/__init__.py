"""reasonloop: make language models reason better by generator-verifier self-play.

Layers (a lower layer never imports a higher one): `core` -> `tasks`, `graders` ->
`models`, `engine` -> `verifiers`, `search`, `train` -> `recipes`, `eval` -> `cli`.
"""

__version__ = "0.1.0"
