"""Strategies: how a fuzzy function turns its inputs into an output.

`base` holds the protocol (`Strategy`, `Run`, `Generation`) and `predict`,
`chain_of_thought`; `sampling` holds `best_of`, `refine` and `majority`. Both sit below
`lmdsl.fuzzy`, which runs them. `react` and `program_of_thought` derive fuzzy functions of
their own, so they sit above it and are not imported here (import them from `lmdsl`).
"""
