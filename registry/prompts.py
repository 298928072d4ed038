"""Rendering prompt templates in Jinja2's sandbox: no attribute access to internals, no imports."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from registry.exceptions import InvalidInput

__all__ = ["TemplateSyntaxError", "compile_template", "render"]

# Bounds on what one rendering may build, so a template cannot exhaust memory or CPU.
MAX_REPEAT_LENGTH = 100_000
MAX_POWER_EXPONENT = 64
MAX_OUTPUT_CHARS = 1_000_000


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` checked before they run."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_POWER_EXPONENT:
                raise SecurityError(f"exponent {right} is above the limit of {MAX_POWER_EXPONENT}")
        elif isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
            seq, count = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(count, int) and len(seq) * count > MAX_REPEAT_LENGTH:
                raise SecurityError(f"a repetition longer than {MAX_REPEAT_LENGTH} items")
        return super().call_binop(context, operator, left, right)


_env = _BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=1024)
def compile_template(source: str) -> Any:
    """Parse a template once; raises TemplateSyntaxError with a line number."""
    return _env.from_string(source)


def render(source: str, declared: list[dict[str, Any]], arguments: dict[str, Any]) -> str:
    """Render with the given arguments; missing required or unknown arguments are InvalidInput."""
    names = {arg["name"] for arg in declared}
    missing = [arg["name"] for arg in declared if arg.get("required") and arg["name"] not in arguments]
    if missing:
        raise InvalidInput(f"Missing required prompt argument(s): {', '.join(missing)}.")
    unknown = sorted(set(arguments) - names)
    if unknown:
        raise InvalidInput(
            f"Unknown prompt argument(s): {', '.join(unknown)}; "
            f"this prompt takes: {', '.join(sorted(names)) or 'none'}."
        )
    values = {name: arguments.get(name, "") for name in names}
    try:
        text = str(compile_template(source).render(values))
    except (UndefinedError, SecurityError, OverflowError) as exc:  # OverflowError: the sandbox's range limit
        raise InvalidInput(f"The prompt template cannot be rendered: {exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:  # e.g. {{ 1/0 }}, {{ "a" + 1 }}
        raise InvalidInput(f"The prompt template failed while rendering: {type(exc).__name__}: {exc}") from None
    if len(text) > MAX_OUTPUT_CHARS:
        raise InvalidInput(f"The rendered prompt is longer than {MAX_OUTPUT_CHARS} characters.")
    return text
