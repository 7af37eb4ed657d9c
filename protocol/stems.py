"""Stem names as they travel on the wire, in manifests and as file names (``<stem>.wav``).

`STEM_SETS` is what a request's ``stems`` count (2, 4, 5 or 6) gives, in track order (vocals
first, as a DAW user expects them at the top). The DAW scripts' copies are generated from
here (`clients/reaper/make_constants.py`).
"""

from __future__ import annotations

TWO = ("vocals", "instrumental")
FOUR = ("vocals", "drums", "bass", "other")
SIX = ("vocals", "drums", "bass", "other", "guitar", "piano")
#: From a 6-source model, guitar summed into other (so the stems still sum to the mix).
FIVE = ("vocals", "drums", "bass", "piano", "other")

#: Stems per requested stem count, in output order.
STEM_SETS: dict[int, tuple[str, ...]] = {2: TWO, 4: FOUR, 5: FIVE, 6: SIX}

#: Output order of every stem name a model may give (others sort after, by name).
ORDER = ("vocals", "drums", "bass", "other", "guitar", "piano", "instrumental", "accompaniment")
