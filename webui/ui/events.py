"""Wiring that Gradio's own event chaining does not give as documented."""
from __future__ import annotations


def then_always(event, fn, inputs, outputs, **kwargs) -> None:
    """Run `fn` after `event` whether it succeeded or raised (buttons back, lists refreshed).

    Gradio's docs say `.then` runs regardless, but its 6.31 frontend dispatches `.then` listeners only
    after a success — after a gr.Error it fires only `.failure` ones — so a refused Generate left the
    Interrupt button up and no Generate. Both are wired: exactly one of them fires."""
    event.then(fn, inputs, outputs, **kwargs)
    event.failure(fn, inputs, outputs, **kwargs)
