"""The library's import arrows point one way: a test that reads the code, not a drawing.

Every `import` and `from ... import` in shapeinv_core (at the top of a module or inside a function)
is an arrow. The packages sit in layers, top to bottom as LAYERS lists them; an arrow may stay inside
its own package or point down, never up. And no module reaches itself again by following arrows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shapeinv_core"

# Top to bottom: the command line; the app's queue and workers; the toy world's training and checks; images
# from a concept; their scores; how *s is learned; masks; model loading; drawn chairs; files; settings;
# errors. The package root (shapeinv_core/__init__.py: the version) is below them all.
LAYERS = ("cli", "jobs", "toy", "generation", "evaluation", "method", "masks", "models", "chairs", "files",
          "config", "errors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The shapeinv_core and app modules that `path` imports (absolute names; a name imported from a
    package counts as its submodule when there is one, else as the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] in ("shapeinv_core", "app"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] in ("shapeinv_core", "app"):
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found - {name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
ARROWS = {name: imports(path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    """0 for the top layer; the app is above them all (-1), the package root (its version) the bottom."""
    parts = module.split(".")
    if parts[0] == "app":
        return -1
    return LAYERS.index(parts[1]) if len(parts) > 1 else len(LAYERS)


def points_up(source: str, target: str) -> bool:
    """An arrow between two packages (or top-level modules) that does not point down the layers."""
    return target.split(".")[:2] != source.split(".")[:2] and layer(target) <= layer(source)


def test_every_module_is_in_a_layer():
    unknown = sorted(m for m in MODULES if m != "shapeinv_core" and m.split(".")[1] not in LAYERS)
    assert unknown == [], f"add these to LAYERS (where they belong): {unknown}"


def test_arrows_stay_in_their_package_or_point_down():
    """`shapeinv serve` (the command line) starts the app: the one arrow into it, and the only one allowed up."""
    upward = sorted(f"{source} -> {target}" for source, targets in ARROWS.items() for target in targets
                    if points_up(source, target))
    assert upward == ["shapeinv_core.cli -> app.__main__"], "imports that point up the layers:\n" + "\n".join(upward)


def circles(arrows: dict[str, set[str]]) -> list[str]:
    """Each module that leads back to itself by following arrows, with the way round."""
    found = []
    for start in sorted(arrows):
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            if start in arrows.get(module, ()):
                found.append(" -> ".join(path + [start]))
                break
            for target in sorted(arrows.get(module, ())):
                if target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    return found


def test_no_module_imports_itself_through_others():
    assert circles(ARROWS) == [], "import circles:\n" + "\n".join(circles(ARROWS))


@pytest.mark.parametrize("source, target, up", [
    ("shapeinv_core.models.loading", "shapeinv_core.method.concept", True),   # models must not know the method
    ("shapeinv_core.method.inversion", "shapeinv_core.jobs.store", True),
    ("shapeinv_core.evaluation.metrics", "shapeinv_core.generation.generate", True),  # a sideways-up arrow
    ("shapeinv_core.jobs.worker", "shapeinv_core.method.inversion", False),
    ("shapeinv_core.method.inversion", "shapeinv_core.method.attention", False),  # inside one package
])
def test_the_checker_tells_up_from_down(source, target, up):
    assert points_up(source, target) is up


def test_the_checker_finds_the_models_and_tiny_circle_that_was_there():
    """Issue 28 found `models` importing `tiny` and `tiny` importing `models.cache_dir` back."""
    arrows = {"models": {"tiny", "config"}, "tiny": {"models"}, "config": set()}
    assert circles(arrows) == ["models -> tiny -> models", "tiny -> models -> tiny"]
