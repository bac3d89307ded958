"""NFL reference facts shared by the data generator, the importer and the API.

Player names are stored in one canonical spelling so that the play-by-play feed,
the game log and API requests agree on who a player is.
"""
from __future__ import annotations

import re

#: The 32 team abbreviations (the keys every table and request uses).
TEAMS: tuple[str, ...] = (
    "ARI", "ATL", "BAL", "BUF", "CAR", "CHI", "CIN", "CLE",
    "DAL", "DEN", "DET", "GB", "HOU", "IND", "JAX", "KC",
    "LAC", "LAR", "LV", "MIA", "MIN", "NE", "NO", "NYG",
    "NYJ", "PHI", "PIT", "SEA", "SF", "TB", "TEN", "WAS",
)

#: Longest player name the app accepts (longest real NFL names are ~30 characters).
MAX_PLAYER_NAME_LENGTH = 64

_SUFFIXES = {"jr": "Jr.", "sr": "Sr.", "ii": "II", "iii": "III", "iv": "IV"}
_WORD_PART = re.compile(r"([A-Za-z]+)")


def normalize_team(raw: str) -> str:
    """Team abbreviation as stored: trimmed and upper case (``" kc "`` → ``"KC"``)."""
    return raw.strip().upper()


def normalize_player_name(raw: str) -> str:
    """Canonical spelling of a player name.

    Whitespace is collapsed, a suffix is written one way (``"Penix, jr"`` →
    ``"Penix Jr."``) and a name typed in all lower or all upper case is
    capitalised per part (``"o'connell"`` → ``"O'Connell"``, ``"c.j."`` →
    ``"C.J."``). Mixed case is kept as given, so ``"DeVito"`` survives.
    """
    words = raw.replace(",", " ").split()
    suffix = None
    if len(words) > 1 and words[-1].lower().rstrip(".") in _SUFFIXES:
        suffix = _SUFFIXES[words.pop().lower().rstrip(".")]
    name = " ".join(words)
    if name == name.lower() or name == name.upper():
        name = _WORD_PART.sub(lambda m: m.group(1).capitalize(), name)
    return f"{name} {suffix}" if suffix else name
