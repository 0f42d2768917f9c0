"""What happens in a fuzzy call, from `fn(...)` to its record.

`function` holds `FuzzyFunction` (analysis once, at decoration); `loop` the call loop as a
sequence of steps (ask, read, judge, re-ask) and the `Run` a strategy drives; `checks` the
`ensure` checks and what happens when one still fails; `records` the record of each call,
usage, and the observers that see calls. The package face imports nothing, so the lower
modules load without the upper ones.
"""
