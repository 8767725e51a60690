"""Finnish personal identity codes for tests, restated from the Population Information Act
independently of the product's tables."""

from __future__ import annotations

from datetime import date

from hypothesis import strategies as st

TODAY = date(2026, 1, 15)
SIGNS_OF_CENTURY = {1800: "+", 1900: "-YXWVU", 2000: "ABCDEF"}
CHECK_TABLE = "0123456789ABCDEFHJKLMNPRSTUVWXY"


def make_code(day: int, month: int, yy: int, sign: str, individual: int) -> str:
    nine = f"{day:02d}{month:02d}{yy:02d}{individual:03d}"
    return f"{nine[:6]}{sign}{nine[6:]}{CHECK_TABLE[int(nine) % 31]}"


@st.composite
def valid_codes(draw: st.DrawFn, today: date = TODAY) -> str:
    century = draw(st.sampled_from(sorted(SIGNS_OF_CENTURY)))
    sign = draw(st.sampled_from(SIGNS_OF_CENTURY[century]))
    born = draw(st.dates(date(century, 1, 1), min(date(century + 99, 12, 31), today)))
    return make_code(born.day, born.month, born.year % 100, sign, draw(st.integers(2, 999)))
