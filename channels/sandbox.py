"""The template sandbox with a cost limit: an organizer's typo (a loop too long, a text
multiplied a billion times, a macro that calls itself) must not stop a plan or a wave. Every
rendering goes through `render_limited` in a `LimitedEnvironment` (`channels.render`)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import TemplateRuntimeError, nodes
from jinja2.filters import do_center, do_format, do_indent
from jinja2.sandbox import SandboxedEnvironment

# what one template may cost to render: the items of a range(), the characters of a rendered
# part, the seconds of one rendering
MAX_RANGE = 10_000
MAX_OUTPUT = 500_000
MAX_RENDER_SECONDS = 2.0


class RenderLimit(TemplateRuntimeError):
    """A template that would cost more than a message may: too long a loop, too much text,
    too much time."""


# when the rendering under way must end (time.monotonic()); None: not rendering
_deadline: ContextVar[float | None] = ContextVar("render_deadline", default=None)


def _on_time() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimit(f"rendering took more than {MAX_RENDER_SECONDS:g} s (a loop too "
                          f"long, or a macro that calls itself?)")


def _limited_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderLimit(f"range() of {len(numbers):,} items: a template may count to at "
                          f"most {MAX_RANGE:,}")
    return numbers


def _timed(items: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` loops through this: nested loops that print nothing still end."""
    for i, item in enumerate(items):
        if i % 64 == 0:
            _on_time()
        yield item


def _size(n: Any, what: str) -> None:
    if isinstance(n, int) and n > MAX_OUTPUT:
        raise RenderLimit(f"{what} of {n:,}: a message is at most {MAX_OUTPUT:,} characters")


_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\d+)|%[-#0 +]*\d*\.(\d+)")


_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d{7,})")


def _check_percent(fmt: Any) -> None:
    if isinstance(fmt, str):
        for m in _PERCENT_WIDTH.finditer(fmt):
            _size(int(m.group(1) or m.group(2)), "a % width")


def _center(value: str, width: int = 80) -> str:
    _size(width, "center() width")
    return do_center(value, width)


def _indent(value: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _size(width if isinstance(width, int) else len(width), "indent() width")
    if isinstance(width, int) and width * (value.count("\n") + 1) > MAX_OUTPUT:
        _size(width * (value.count("\n") + 1), "indent() output")
    return do_indent(value, width, first, blank)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(value)
    return do_format(value, *args, **kwargs)


class LimitedEnvironment(SandboxedEnvironment):
    """The sandbox, with a cost limit: range() is bounded, every loop and every call checks
    the clock, and the operators that multiply text (`*`, `**`, `%`) check the size first."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = _limited_range
        self.filters.update(center=_center, indent=_indent, format=_format, _timed=_timed)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_timed", [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _on_time()
        if getattr(obj, "__self__", None).__class__ is str:  # "x".center(n), .ljust(n)...
            for arg in args:
                _size(arg, f"{getattr(obj, '__name__', 'a string method')}() argument")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # "{:1000000000}".format(x): the widths written in the string, and any given as
        # arguments ("{:{}}".format(x, n)), are checked before it formats
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        for m in _FORMAT_WIDTH.finditer(value.__self__):
            _size(int(m.group(1)), "a format width")

        def checked(*args: Any, **kwargs: Any) -> str:
            for arg in (*args, *kwargs.values()):
                _size(arg, "a format argument")
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _on_time()
        if operator == "*":
            for text, times in ((left, right), (right, left)):
                if isinstance(text, str | list | tuple) and isinstance(times, int):
                    _size(len(text) * times, "text times a number")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and abs(left) > 1
                    and right * math.log2(abs(left)) > 4096):
                raise RenderLimit(f"{left} ** {right}: a number too large for a message")
        elif operator == "%":
            _check_percent(left)
        return super().call_binop(context, operator, left, right)


def render_limited(template: Any, ctx: dict) -> str:
    """The template rendered within its limits of time and size; a limit is raised inside
    the template (where it was when the limit hit), so that the error names its line."""
    token = _deadline.set(time.monotonic() + MAX_RENDER_SECONDS)
    try:
        chunks: list[str] = []
        size = 0
        stream = template.generate(ctx)
        for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            try:
                if size > MAX_OUTPUT:
                    raise RenderLimit(f"renders to more than {MAX_OUTPUT:,} characters")
                _on_time()
            except RenderLimit as exc:
                stream.throw(exc)
        return "".join(chunks)
    finally:
        _deadline.reset(token)
