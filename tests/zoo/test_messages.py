"""Other libraries' errors quoted in our one-line messages are cut at a word, never mid-word (issue 19.6)."""

from zoo.messages import first_line

HUB = (
    "An error happened while trying to locate the file on the Hub and we cannot find the requested files in the "
    "local cache. Please check your connection and try again or make sure your Internet connection is on.\nmore"
)


def test_a_long_first_line_is_cut_at_a_word():
    text = first_line(HUB, limit=160)
    assert text.endswith("…") and len(text) <= 161
    assert HUB.startswith(text[:-1]) and HUB[len(text) - 1] == " "  # the cut falls on a space: no "try aga"


def test_short_lines_blank_errors_and_other_lines():
    assert first_line(ValueError("short\nsecond")) == "short"
    assert first_line(ValueError("short\nsecond"), line=1) == "second"
    assert first_line(ValueError("only one"), line=1) == "only one"
    assert first_line(KeyError()) == "KeyError"
    assert first_line("x" * 300, limit=10) == "x" * 10 + "…"  # no space to cut at
