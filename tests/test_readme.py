"""The README's test command is what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:3]]
    install_and_serve, test_command = blocks
    assert "heron" in install_and_serve and "pip install" in install_and_serve
    assert test_command in ci.splitlines(), "the .ci/run script must run the README's test command verbatim"
