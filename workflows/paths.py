"""Workspace paths read as components, for approval rules and remembered decisions on file tools.

Why: a character prefix knows nothing of paths. "src/" is a prefix of "src/../../etc/passwd", and "src" of
"src2/secrets". Rules and remembered decisions compare whole components instead, and whatever this module cannot read
for sure it refuses (None): a refused path never matches an allow rule or a remembered decision, so it costs a human
one click, never a silent write.

Read: components separated by "/"; repeated separators, "." components and a trailing "/" are dropped. An absolute
path keeps "/" as its first component, so it never matches a relative one. Refused: an empty path (or only "."),
".." anywhere (even where it would cancel out), a first component starting with "~" (home expansion), a backslash
(a Windows separator or an escape: which one is not known), control characters, and paths over `MAX_PATH_LENGTH`.
The IDE resolves symbolic links; a link inside an approved directory is outside what this can see.

Pure and deterministic (no file system access), so it is safe inside workflow code.
"""

from __future__ import annotations

MAX_PATH_LENGTH = 4096
ROOT = "/"


def path_components(path: str) -> tuple[str, ...] | None:
    """The components of a path, or None when it is refused (see the module docstring).

    Args:
        path: A path as a tool call gives it.

    Returns:
        The components, "/" first for an absolute path; None when the path is refused.
    """
    if not path or len(path) > MAX_PATH_LENGTH or "\\" in path:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in path):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts or (parts and parts[0].startswith("~")):
        return None
    components = (ROOT, *parts) if path.startswith("/") else tuple(parts)
    return components or None


def path_has_prefix(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or lies under it, component by component. Both must be readable."""
    inner, outer = path_components(path), path_components(prefix)
    if inner is None or outer is None:
        return False
    return inner[: len(outer)] == outer


def render_path(components: tuple[str, ...] | list[str]) -> str:
    """The path the components stand for, as people read it."""
    if components and components[0] == ROOT:
        return ROOT + "/".join(components[1:])
    return "/".join(components)
