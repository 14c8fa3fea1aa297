"""The distributions ``python -m build`` makes install into a clean venv and serve.

What a user of the published package gets: the wheel and the sdist are built
from this checkout, each installed into a venv of its own (its dependencies
from the package index), and the installed ``heron`` command serves a request.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

import heron

from .test_cli import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    found = {"wheel": next(out.glob("heron-*.whl")), "sdist": next(out.glob("heron-*.tar.gz"))}
    return found


def test_metadata_and_license(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        info = f"heron-{heron.__version__}.dist-info"
        metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
        assert any(n.startswith(info) and n.endswith("LICENSE") for n in names), names
        assert "heron/py.typed" in names and "heron/demo.py" in names
    assert metadata["Name"] == "heron" and metadata["Version"] == heron.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata["Requires-Python"] == ">=3.10"
    assert "hpack>=4" in metadata.get_all("Requires-Dist", [])
    with tarfile.open(dists["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "pyproject.toml", "src/heron/_ext/speedups.c"} <= members


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_and_serves(dists: dict[str, Path], kind: str, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(dists[kind])], check=True, capture_output=True, timeout=240
    )
    port = free_port()
    # started from an empty directory: the installed package, not the checkout, is imported
    proc = subprocess.Popen(
        [str(env_dir / "bin" / "heron"), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "the installed heron did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert f"heron {heron.__version__} is running" in response.text
        where = subprocess.run(
            [str(python), "-c", "import heron; print(heron.__file__)"], capture_output=True, text=True, check=True
        ).stdout
        assert str(env_dir) in where, where
    finally:
        proc.terminate()
        proc.wait(timeout=15)
