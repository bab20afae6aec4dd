"""Prompt editing and alternation: the schedule A1111 makes of a prompt (modules/prompt_parser.py's examples)."""
import pytest

from modules.diffusion.prompt_schedule import has_schedule, schedule, text_at


def g(prompt, steps=10):
    return [list(entry) for entry in schedule(prompt, steps)]


def test_the_examples_in_a1111s_docstring():
    assert g("test") == [[10, "test"]]
    assert g("a [b:3]") == [[3, "a "], [10, "a b"]]
    assert g("a [b: 3]") == [[3, "a "], [10, "a b"]]
    assert g("a [[[b]]:2]") == [[2, "a "], [10, "a [[b]]"]]
    assert g("[(a:2):3]") == [[3, ""], [10, "(a:2)"]]
    assert g("a [b : c : 1] d") == [[1, "a b  d"], [10, "a  c  d"]]
    assert g("a[b:[c:d:2]:1]e") == [[1, "abe"], [2, "ace"], [10, "ade"]]
    assert g("a [unbalanced") == [[10, "a [unbalanced"]]
    assert g("a [b:.5] c") == [[5, "a  c"], [10, "a b c"]]
    assert g("((a][:b:c [d:3]") == [[3, "((a][:b:c "], [10, "((a][:b:c d"]]
    assert g("[a|(b:1.1)]") == [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]
    assert g("[fe|]male") == [[i, "female" if i % 2 else "male"] for i in range(1, 11)]
    assert g("[fe|||]male") == [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]
    # A1111's docstring lists "a [{b|d{:.5] c" as "not handling this right now"; its parser takes it as text
    assert g("a [{b|d{:.5] c") == [[10, "a [{b|d{:.5] c"]]


def test_the_example_at_the_top_of_a1111s_parser():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


def test_the_hires_pass_counts_its_own_steps():
    # A1111's docstring: a hires pass of 10 steps after a first pass of 10
    assert schedule("a [b:.5] c", 10, first_pass_steps=10) == [(10, "a b c")]
    assert schedule("a [b:1.5] c", 10, first_pass_steps=10) == [(5, "a  c"), (10, "a b c")]
    # a step number counts from the start of the first pass: 20 + 5
    assert schedule("[a:b:25]", 10, first_pass_steps=20) == [(5, "a"), (10, "b")]
    assert schedule("[a:b:20]", 10, first_pass_steps=20) == [(10, "b")]
    assert schedule("[a|b]", 4, first_pass_steps=20) == [(1, "a"), (2, "b"), (3, "a"), (4, "b")]


def test_when_is_a_step_number_or_a_fraction():
    assert g("[a:b:1.0]") == [[10, "a"]]  # a fraction: all ten steps
    assert g("[a:b:1]") == [[1, "a"], [10, "b"]]  # a step number: after the first
    assert g("[a:b:0]") == [[10, "b"]] and g("[a:b:-2]") == [[10, "b"]]
    assert g("[a:b:12]") == [[10, "a"]] and g("[a:b:1e999]") == [[10, "a"]]
    assert g("[a:b:+3]") == [[3, "a"], [10, "b"]] and g("[a:b: 3 ]") == [[3, "a"], [10, "b"]]
    assert g("[a::3]") == [[3, "a"], [10, ""]] and g("[:b:3]") == [[3, ""], [10, "b"]]
    assert g("[a:b:3][c:d:6]") == [[3, "ac"], [6, "bc"], [10, "bd"]]
    assert g("[[a|b]:3]")[:5] == [[1, ""], [2, ""], [3, ""], [4, "b"], [5, "a"]]


def test_what_is_not_an_edit_stays_text_as_written():
    for text in ("a cat", "(red:1.2) [faded] \\(x\\)", "a [b:c] d", "[a:b:c:3]", "[a:b:3x]", "[a:b:.5.5]"):
        assert g(text) == [[10, text]] and not has_schedule(text)
    # a `|` outside an alternation, or a backslash at the end: A1111 takes the whole prompt as text
    for text in ("x [a|b] y | z", "[a:3] [b|c", "[a:b:3] \\"):
        assert g(text) == [[10, text]] and not has_schedule(text)
    assert g("\\[a:b:3]") == [[10, "\\[a:b:3]"]]  # escaped
    assert g("[a\\:b:c:3]") == [[3, "a\\:b"], [10, "c"]]
    assert has_schedule("[cat|dog]") and has_schedule("a [b:c:0.5]")


@pytest.mark.parametrize("prompt,first,then", [
    ("[cat:dog:5]((masterpiece))", "cat((masterpiece))", "dog((masterpiece))"),
    ("((a)), [b:c:3]", "((a)), b", "((a)), c"),
    ("(([b:c:3]:1.2))", "((b:1.2))", "((c:1.2))"),
    ("[[b:c:3]]", "[b]", "[c]"),
    ("[(b:1.2):c:3]", "(b:1.2)", "c"),
    ("[a:b:3]([c])", "a([c])", "b([c])"),
])
def test_edits_inside_and_beside_attention(prompt, first, then):
    entries = schedule(prompt, 10)
    assert [text for _, text in entries] == [first, then]


def test_text_at_a_step_counts_from_zero_as_a1111s_denoiser():
    entries = schedule("[a:b:5]", 10)
    assert [text_at(entries, s) for s in range(10)] == ["a"] * 6 + ["b"] * 4
    alternating = schedule("[a|b]", 6)
    assert [text_at(alternating, s) for s in range(6)] == ["a", "a", "b", "a", "b", "a"]


def test_deep_nesting_is_text_not_a_crash():
    deep = "[" * 5000 + "a:b:1" + "]" * 5000
    assert schedule(deep, 10)[-1][0] == 10
