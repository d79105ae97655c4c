"""Imports follow the data path: clips -> video -> encode -> index -> search | probe -> the CLIs.

Read from the source (every ``import``, also the ones inside functions, where the heavy and
the optional imports live), so a module cannot reach up the path even lazily. ``vcl_infer``
never imports ``training`` or ``export`` (those import the runtime, not the other way).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vcl_infer"

# lowest first; a room may import its own tier and the tiers below it, never a sibling.
# clips/ is the pure rule (which frames make which clip), video/ applies it while decoding.
TIERS: list[set[str]] = [
    {""},  # the top-level modules: errors, _optional, registry, the lazy __init__
    {"clips"},
    {"video"},
    {"encode"},
    {"index"},
    {"search", "probe", "distributed"},  # distributed: the index build on Ray
    {"cli", "serve"},  # the applications: may use every room below
]
FORBIDDEN = ("training", "export")


def room_of(module: str) -> str:
    """``vcl_infer.encode.bundle`` -> ``encode``; a top-level module -> ``""``."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return ""


def tier_of(room: str) -> int:
    for level, rooms in enumerate(TIERS):
        if room in rooms:
            return level
    raise AssertionError(f"vcl_infer/{room}/ is in no tier of tests/test_layering.py: add it")


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "vcl_infer":  # from vcl_infer import X: X may be a room
                found += [(node.lineno, f"vcl_infer.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
    return found


def violations(source: str, module: str) -> list[str]:
    """What ``module`` (its source given) imports against the tiers."""
    mine = tier_of(room_of(module))
    bad = []
    for line, name in imported_modules(source, module):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            bad.append(f"{module}:{line} imports {name} (vcl_infer never imports {top})")
        elif top == "vcl_infer" and name != "vcl_infer":
            room = room_of(name)
            if room == room_of(module):
                continue
            theirs = tier_of(room)
            if theirs > mine or (theirs == mine and room != room_of(module)):
                bad.append(f"{module}:{line} imports {name} ({room or 'top level'} is not below "
                           f"{room_of(module) or 'top level'})")
    return bad


def runtime_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append((".".join(parts), path))
    return modules


def test_every_runtime_import_points_down_the_data_path():
    bad = [v for module, path in runtime_modules() for v in violations(path.read_text(), module)]
    assert bad == [], "\n".join(bad)


def test_every_room_has_a_tier():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set().union(*TIERS) - {""}


def test_the_check_catches_an_upward_a_sideways_and_a_training_import():
    lazy_up = "def f():\n    from vcl_infer.search.query import search_index\n"
    assert violations(lazy_up, "vcl_infer.encode.embedder")  # encode reaching up, lazily
    assert violations("from vcl_infer.probe import labels\n", "vcl_infer.search.query")  # sibling
    assert violations("import training.loop\n", "vcl_infer.clips.spec")
    assert violations("from ..index.build import build_index\n", "vcl_infer.clips.sampling")  # relative
    assert not violations("from vcl_infer.clips.spec import ClipSpec\n", "vcl_infer.encode.bundle")
    assert not violations("from vcl_infer.errors import VclError\n", "vcl_infer.video.open")
