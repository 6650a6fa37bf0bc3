"""StopStringChecker: matches across pushes, truncation, earliest-wins, streaming hold-back."""
import pytest

from tritium.llm.stop_checker import StopStringChecker


def feed(checker, pieces):
    """Push pieces one at a time like the output processor; return (stop, text, pushes used)."""
    text = ""
    for n, piece in enumerate(pieces, 1):
        text += piece
        stop, truncated = checker.check(text, len(piece))
        if stop is not None:
            return stop, truncated, n
    return None, text, len(pieces)


def test_stop_string_spanning_several_pushes():
    checker = StopStringChecker(["</answer>"])
    stop, text, n = feed(checker, ["The result", " is 42<", "/ans", "wer", ">", " more"])
    assert (stop, text, n) == ("</answer>", "The result is 42", 5)


def test_include_stop_str_in_output():
    checker = StopStringChecker(["STOP"], include_stop_str_in_output=True)
    stop, text, _ = feed(checker, ["abc S", "TO", "Pxyz"])
    assert (stop, text) == ("STOP", "abc STOP")  # cut right after the stop string


def test_no_match_returns_the_text_unchanged():
    checker = StopStringChecker(["###"])
    assert feed(checker, ["a#", "#b", "# c"]) == (None, "a##b# c", 3)
    assert checker.check("abc###", 0) == (None, "abc###")  # nothing new: nothing to find


def test_earliest_stop_wins():
    checker = StopStringChecker(["world", "lo w", "o"])
    # All three are in the new text; "lo w" starts first (index 3).
    assert checker.check("hello world", len("hello world")) == ("lo w", "hel")
    # Same start: the one that ends first wins.
    checker = StopStringChecker(["abcd", "ab"], include_stop_str_in_output=True)
    assert checker.check("xxabcd", 6) == ("ab", "xxab")
    # Earliest occurrence of one stop string, when it appears twice in the new text.
    checker = StopStringChecker(["--"])
    assert checker.check("a--b--", 6) == ("--", "a")


def test_only_matches_ending_in_new_text_are_searched():
    checker = StopStringChecker(["END", "xyz"])
    old = "prefix END middle "  # a match wholly in old text was already handled (or skipped)
    assert checker.check(old + "tail", len("tail")) == (None, old + "tail")
    # ...but one that starts in the old text and ends in the new one is found.
    assert checker.check("abc xy" + "z!", 2) == ("xyz", "abc ")
    # The search window is exact: "xyz" ending one char before the new text is not new.
    assert checker.check("abc xyz" + "!", 1) == (None, "abc xyz!")


def test_hold_back_in_streaming():
    checker = StopStringChecker(["<|end|>", "\n\n"])
    assert checker.max_stop_len == 7 and checker.hold_back_len == 6
    text = ""
    emitted = ""
    for piece in ["Hello", " there", " <|e", "nd|>"]:
        text += piece
        stop, truncated = checker.check(text, len(piece))
        if stop is not None:
            text = truncated
            emitted = text[:checker.streamable_len(len(text), final=True)]
            break
        safe = text[:checker.streamable_len(len(text), final=False)]
        assert safe.startswith(emitted)
        emitted = safe
        assert "<" not in emitted  # the start of a stop string was never shown
    assert emitted == "Hello there "
    assert checker.streamable_len(3, final=False) == 0
    assert checker.streamable_len(10, final=True) == 10
    assert StopStringChecker([]).hold_back_len == 0


def test_invalid_stop_strings():
    with pytest.raises(ValueError):
        StopStringChecker([""])
