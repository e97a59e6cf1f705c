"""The package arrows point down: main -> data -> common. The paper's code (common, data, main) never imports the
embedded world (embedded/), which imports it, so a reader of the method never meets the mannequin, the synthetic
scenes or the demo driver; and common/ (the network, body model, losses, metrics, loops) imports neither data/ nor
main/, so it can be read and reused without the datasets."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER_PACKAGES = ("common", "data", "main")


def embedded_imports(source, package="embedded"):
    """(line, module) of every import of `package` in Python `source`, at any depth (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m == package or m.startswith(package + ".")]
    return found


def test_the_check_finds_every_form_of_import():
    source = ("import embedded\nimport numpy, embedded.scene\nfrom embedded.generate import generate\n"
              "def f():\n    from embedded import demo\n"
              "# from embedded import nothing (a comment)\nfrom common.x import embedded_thing\nimport embeddedx\n")
    assert embedded_imports(source) == [(1, "embedded"), (2, "embedded.scene"), (3, "embedded.generate"),
                                        (5, "embedded")]


def test_the_paper_code_does_not_import_the_embedded_world():
    files = [path for package in PAPER_PACKAGES for path in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 20  # the walk sees the packages
    found = [f"{path.relative_to(REPO)}:{line}: imports {module}" for path in files
             for line, module in embedded_imports(path.read_text())]
    assert not found, "common/, data/ and main/ must not import embedded/:\n" + "\n".join(found)


def test_common_imports_neither_data_nor_main():
    files = sorted((REPO / "common").rglob("*.py"))
    assert len(files) > 10
    found = [f"{path.relative_to(REPO)}:{line}: imports {module}" for path in files for package in ("data", "main")
             for line, module in embedded_imports(path.read_text(), package)]
    assert not found, "common/ must not import data/ or main/ (arrows point down):\n" + "\n".join(found)
