"""Training loops: the coarse CNN from imprecise labels and the RNN from a small accurate patch.

:mod:`.sampling` (which pixels, held-out regions, patches), :mod:`.losses`, :mod:`.loop` (what
both loops share), :mod:`.coarse` and :mod:`.rnn` (the loops and their config dataclasses, the
one source of the training defaults).
"""
