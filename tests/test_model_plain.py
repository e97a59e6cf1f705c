"""The model files hold only the method: the speed tricks (common/speed) are applied from outside."""
import ast
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1] / "common" / "model"


def test_model_files_do_not_import_the_speed_package():
    for path in sorted(MODEL_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[:2] == ["common", "speed"] for name in names), path
