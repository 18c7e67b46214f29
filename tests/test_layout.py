"""The repository's rooms: deployed code (functions/, eventing/) imports no development code,
the development code (scripts/, devstack/) imports no tests, and eventing/ holds only what an
image deploys. Imports are read with `ast`, so a word in a docstring or comment is no import."""

import ast
from pathlib import Path

from scripts.build_images import IMAGES, copied_sources

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED = ("functions", "eventing")
DEVELOPMENT = ("scripts", "devstack")


def modules(*folders: str) -> list[Path]:
    return sorted(
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts and "node_modules" not in path.parts
    )


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports by absolute name, anywhere in its body."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


def importers(folders: tuple[str, ...], forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {', '.join(sorted(found))}"
        for path in modules(*folders)
        if (found := imported_packages(path) & forbidden)
    ]


def test_no_deployed_module_imports_scripts_devstack_or_tests():
    assert importers(DEPLOYED, {"scripts", "devstack", "tests"}) == []


def test_no_scripts_or_devstack_module_imports_tests():
    assert importers(DEVELOPMENT, {"tests"}) == []


def test_every_eventing_module_is_copied_into_the_receiver_image():
    (receiver,) = [image for image in IMAGES if image.name == "b2-receiver"]
    copied = copied_sources(receiver.dockerfile, receiver.build_args)
    not_deployed = [
        str(path.relative_to(ROOT))
        for path in modules("eventing")
        if path.name != "__init__.py"
        and not any(path.is_relative_to(ROOT / source) for source in copied)
    ]
    assert not_deployed == []
