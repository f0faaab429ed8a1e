"""The exploration: decisions Hypothesis draws, the state machine that applies them, one run each.

:mod:`._decisions` are the steps of a program (start an operation, let a client run to its next
point, advance the clock, crash a client); :mod:`._machine` is the Hypothesis state machine that
draws them; :mod:`._run` is one example executing them; :mod:`._explore` runs the search, judges
each history with the checkers and turns the shrunk failure into the story.
"""
