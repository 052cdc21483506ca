"""``sam build`` ships every module with the bytecode Lambda's Python reads: /opt and /var/task are
read-only there, so a module without its .pyc would be compiled from source on every cold start
(docs/BENCHMARKS.md). The .pyc are unchecked-hash ones (valid whatever the files' timestamps after
a zip and an unzip), and a build's bytes depend on its sources only."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from local import template as tpl
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = tpl.load()["Globals"]["Function"]["Runtime"]  # python3.13
VERSION = tuple(int(n) for n in RUNTIME.removeprefix("python").split("."))
TAG = f"cpython-{VERSION[0]}{VERSION[1]}"
UNCHECKED_HASH = 0b01  # PEP 552 flags: hash-based, source not checked

needs_runtime_python = pytest.mark.skipif(
    sys.version_info[:2] != VERSION, reason=f"the .pyc's magic number and source hash are {RUNTIME}'s"
)


def _artifacts(build: Path) -> dict[str, Path]:
    """Each function's and layer's built directory, as the built template names them."""
    resources = yaml_parse((build / "template.yaml").read_text())["Resources"]
    found = {}
    for logical_id, resource in resources.items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                found[logical_id] = build / properties[key]
    return found


def _bytecode_problem(source: Path) -> str | None:
    """Why Python would not take ``source``'s shipped .pyc as it is, or None."""
    pyc = source.parent / "__pycache__" / f"{source.stem}.{TAG}.pyc"
    if not pyc.is_file():
        return "no .pyc"
    header = pyc.read_bytes()[:16]
    if header[:4] != importlib.util.MAGIC_NUMBER:
        return "another Python's .pyc"
    if int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
        return "not an unchecked-hash .pyc"
    if header[8:16] != importlib.util.source_hash(source.read_bytes()):
        return "compiled from another source"
    return None


@needs_runtime_python
def test_every_module_of_every_function_and_layer_ships_its_bytecode(sam_build: Path) -> None:
    # Given what `sam build` built from the current sources
    artifacts = _artifacts(sam_build)
    assert {"BrokerLayer", "CallbackFunction"} <= set(artifacts)
    for logical_id, directory in artifacts.items():
        # When every module's bytecode is looked up where Python looks for it
        sources = sorted(directory.rglob("*.py"))
        problems = {str(s.relative_to(directory)): p for s in sources if (p := _bytecode_problem(s))}
        # Then each has its own, and nothing else is shipped as bytecode
        assert sources, f"{logical_id}: no module built"
        first = dict(list(problems.items())[:5])
        assert not problems, f"{logical_id}: {len(problems)} of {len(sources)} modules, e.g. {first}"
        expected = {s.parent / "__pycache__" / f"{s.stem}.{TAG}.pyc" for s in sources}
        assert set(directory.rglob("*.pyc")) == expected, f"{logical_id}: bytecode without a module"
    layer = artifacts["BrokerLayer"] / "python"
    assert (layer / "requests").is_dir() and (layer / "apicbase_oauth").is_dir()


def _build_function(logical_id: str, code_uri: Path, into: Path, mtime: float) -> dict[str, bytes]:
    """``sam build``'s make step for one function: a copy of its CodeUri (its files modified at
    ``mtime``), then ``make build-<id>`` in it; the files built, by path."""
    work = into.with_name(into.name + "-src")
    shutil.copytree(code_uri, work, symlinks=False)
    for path in work.rglob("*"):
        os.utime(path, (mtime, mtime))
    python = subprocess.run(
        [ROOT / "scripts" / "find-python", "--exact", RUNTIME.removeprefix("python")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {**os.environ, "ARTIFACTS_DIR": str(into), "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        ["make", "--no-print-directory", "--makefile", str(code_uri / "Makefile"), f"build-{logical_id}"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {str(p.relative_to(into)): p.read_bytes() for p in sorted(into.rglob("*")) if p.is_file()}


def test_a_build_is_the_same_bytes_wherever_and_whenever_it_runs(tmp_path: Path, sam_build: Path) -> None:
    # Given the callback's sources, built once
    function = tpl.functions(tpl.load())["CallbackFunction"]
    code_uri = ROOT / function.code_uri
    first = _build_function(function.logical_id, code_uri, tmp_path / "first", mtime=1e9)
    # When they are built again, elsewhere, from files with other timestamps
    second = _build_function(function.logical_id, code_uri, tmp_path / "elsewhere" / "second", mtime=2e9)
    # Then the bytes are the same, and the same as what `sam build` shipped
    assert first == second
    assert any(name.endswith(".pyc") for name in first)
    shipped = _artifacts(sam_build)[function.logical_id]
    assert {n: (shipped / n).read_bytes() for n in first} == first
