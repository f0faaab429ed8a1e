"""The engine: simulated clients run one at a time, and only where the scheduler says.

Every client is a task; each Redis command, SQL statement, commit, sleep and lock acquire is a
scheduling point where the task stops until the exploration's next decision moves it
(:mod:`._scheduler`).  Time is a virtual clock (:mod:`._clock`); the layer's threads, locks,
events and sleeps become cooperative while it runs (:mod:`._patches`, :mod:`._cooperative`),
what cannot be made cooperative is recorded as a hazard (:mod:`._hazards`), and the layer's
logs and warnings are kept out of the way (:mod:`._quiet`).  Nothing here knows Redis or SQL.
"""
