"""Rendering prompt templates in Jinja2's sandbox: no attribute access to internals, no imports."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from registry.exceptions import InvalidInput

__all__ = ["TemplateSyntaxError", "compile_template", "render"]

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


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
        return str(compile_template(source).render(values))
    except (UndefinedError, SecurityError) as exc:
        raise InvalidInput(f"The prompt template cannot be rendered: {exc}") from None
