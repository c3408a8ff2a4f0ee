import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "training"


def test_training_never_imports_django() -> None:
    offenders = []
    files = sorted(TRAINING.rglob("*.py"))
    assert files, TRAINING
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", ""))
                in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            for name in names:
                if name == "django" or name.startswith(("django.", "rest_framework")):
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert not offenders, offenders
