"""The report: what a run and an exploration look like to the people who read them.

:mod:`._trace` renders a run as the replayable program annotated with every call it made;
:mod:`._report` is the figures and verdicts of an exploration.  Nothing here runs the layer.
"""
