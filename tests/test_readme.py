"""The README's quickstart runs as written."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_quickstart_runs(capsys):
    code = re.search(r"## Quickstart.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, "README quickstart", "exec"), {})
    errors = [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?", capsys.readouterr().out)]
    assert errors and max(abs(e) for e in errors) < 0.05  # intgrad's 50-step completeness error is small


def test_keras_section_runs(capsys):
    code = re.search(r"## Keras and eager.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, "README Keras section", "exec"), {})
    assert capsys.readouterr().out.strip().startswith("(3, 5, 4) (3, 5)")
