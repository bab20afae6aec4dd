"""AUTOMATIC1111 prompt editing and alternation: a prompt → the text in effect at each sampling step.

    [from:to:when]   `from` until step `when`, then `to`
    [to:when]        nothing, then `to` after step `when`
    [from::when]     `from`, then nothing after step `when`
    [a|b|c]          a, b, c, a, … one per step
`when` with a "." is a fraction of the steps (0.25), without one a step number; constructs nest
("a [b:[c:d:2]:1] e"). Everything else in the text is kept as written, attention brackets
included, for prompts.py to read.

Semantics follow A1111's modules/prompt_parser.py (its lark grammar and
`get_learned_conditioning_prompt_schedules`), written here as a small recursive-descent parser:
- a bracket that cannot start one of these constructs is kept as a character at the top level
  (`a ] [b:3]`), but inside a construct everything must be well formed;
- a `|` outside an alternation, or a backslash ending the text, makes the whole prompt plain
  text — no editing at all (A1111's parser fails on it and takes the prompt as written);
- the schedule is a list of (end_at_step, text): each `when` that falls within the steps, plus
  every step when the prompt alternates, plus the last step;
- the hires pass counts its own steps: a step number is counted from the start of the first
  pass (so `[a:b:25]` after 20 + 10 steps switches at hires step 5), a fraction from 1.0 upwards
  is the hires pass's part (`[a:b:1.5]` switches halfway through it; `[a:b:0.5]` is `b` there).
No torch here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

# lark's SIGNED_NUMBER as its dynamic lexer matches it (alternatives in this order, no backtracking into a shorter one)
_NUMBER = re.compile(r"[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)")
_SPACE = re.compile(r"\s+")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # `\` escapes any character but a line break
_SPECIAL = "[]():|"


@dataclass(frozen=True)
class Scheduled:
    before: tuple | None  # None: the [to:when] form
    after: tuple
    number: str  # as written: "." in it makes it a fraction


@dataclass(frozen=True)
class Alternate:
    options: tuple  # of sequences; None for an empty option


class _Fail(Exception):
    pass


class _Parser:
    def __init__(self, text: str):
        self.s, self.i = text, 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def top(self) -> tuple:
        """The whole text: constructs where they parse, stray brackets and colons as characters."""
        out: list = []
        while self.i < len(self.s):
            c = self.peek()
            if c == "[":
                start = self.i
                try:
                    out.extend(self.square())
                    continue
                except _Fail:
                    self.i = start
            if c in "[]():":  # a round bracket parses to the same characters whether it pairs or not
                out.append(c)
                self.i += 1
            elif c == "|":
                raise _Fail
            else:
                out.append(self.plain())
        return tuple(out)

    def plain(self) -> str:
        m = _PLAIN.match(self.s, self.i)
        if not m:  # a lone backslash at the end or before a line break
            raise _Fail
        self.i = m.end()
        return m.group(0)

    def prompt(self) -> tuple:
        """Text inside a construct: up to the next `:`, `|`, `]`, `)`; its brackets must pair."""
        out: list = []
        while True:
            c = self.peek()
            if c == "" or c in ":|])":
                return tuple(out)
            if c == "[":
                out.extend(self.square())
            elif c == "(":
                out.extend(self.round())
            else:
                out.append(self.plain())

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Fail
        self.i += 1

    def round(self) -> list:
        self.expect("(")
        inner = ["(", *self.prompt()]
        if self.peek() == ":":
            self.i += 1
            inner += [":", *self.prompt()]
        self.expect(")")
        return [*inner, ")"]

    def square(self) -> list:
        self.expect("[")
        first = self.prompt()
        c = self.peek()
        if c == "]":  # [word]: attention, for prompts.py
            self.i += 1
            return ["[", *first, "]"]
        if c == "|":
            options = [first]
            while self.peek() == "|":
                self.i += 1
                options.append(self.prompt())
            self.expect("]")
            return [Alternate(tuple(o or None for o in options))]
        self.expect(":")
        after_colon = self.i
        try:  # [to:when]
            return [Scheduled(None, first, self.when())]
        except _Fail:
            self.i = after_colon
        second = self.prompt()
        self.expect(":")
        return [Scheduled(first, second, self.when())]

    def when(self) -> str:
        """`[ws] NUMBER [ws] ]` → the number as written."""
        m = _SPACE.match(self.s, self.i)
        if m:
            self.i = m.end()
        m = _NUMBER.match(self.s, self.i)
        if not m:
            raise _Fail
        number, self.i = m.group(0), m.end()
        m = _SPACE.match(self.s, self.i)
        if m:
            self.i = m.end()
        self.expect("]")
        return number


def parse(text: str) -> tuple | None:
    """The prompt as a sequence of text pieces, Scheduled and Alternate nodes; None when A1111 would
    take it as plain text (see the module docstring)."""
    try:
        return _Parser(text).top()
    except _Fail:
        return None
    except RecursionError:  # brackets nested thousands deep: plain text
        return None


def _nodes(seq):
    for node in seq or ():
        if isinstance(node, Scheduled):
            yield node
            yield from _nodes(node.before)
            yield from _nodes(node.after)
        elif isinstance(node, Alternate):
            yield node
            for option in node.options:
                yield from _nodes(option)


def has_schedule(text: str) -> bool:
    """Whether the text changes during sampling (prompt editing or alternation)."""
    if "[" not in text:
        return False
    tree = parse(text)
    return tree is not None and any(True for _ in _nodes(tree))


def _when(number: str, steps: int, first_pass_steps: int | None) -> int:
    value = float(number)
    hires = first_pass_steps is not None
    if "." in number:
        value = (value - (1.0 if hires else 0.0)) * steps
    else:
        value -= first_pass_steps if hires else 0
    if not math.isfinite(value):  # 1e999: past the end; -1e999: before the start
        return steps if value > 0 else -1
    return min(steps, int(value))


def _render(seq, step: int, steps: int, first_pass_steps: int | None) -> str:
    out = []
    for node in seq or ():
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Scheduled):
            use = node.before if step <= _when(node.number, steps, first_pass_steps) else node.after
            out.append(_render(use, step, steps, first_pass_steps))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps, first_pass_steps))
    return "".join(out)


def schedule(text: str, steps: int, first_pass_steps: int | None = None) -> list[tuple[int, str]]:
    """[(end_at_step, text)] for a pass of `steps` steps (A1111's prompt schedule).

    `first_pass_steps`: this is the hires pass, after a first pass of that many steps. The text of
    sampling step s (counted from 0, as A1111's denoiser counts) is that of the first entry with s <= end.
    """
    tree = parse(text) if "[" in text else None
    nodes = list(_nodes(tree)) if tree is not None else []
    if not nodes:
        return [(steps, text)]
    ends = {steps}
    for node in nodes:
        if isinstance(node, Alternate):
            ends.update(range(1, steps + 1))
        else:
            when = _when(node.number, steps, first_pass_steps)
            if when >= 1:
                ends.add(when)
    return [(end, _render(tree, end, steps, first_pass_steps)) for end in sorted(ends)]


def text_at(entries: list[tuple[int, str]], step: int) -> str:
    """The text of sampling step `step` (0-based) in a schedule; past the end, the last one."""
    for end, text in entries:
        if step <= end:
            return text
    return entries[-1][1]
