"""The committed graphengine_pb2.py matches proto/graphengine.proto and imports
with every protobuf runtime that pyproject.toml admits."""

import importlib.util
import re
import subprocess
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "graphengine.proto"
PB2 = ROOT / "graphengine" / "proto" / "graphengine_pb2.py"


def _gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _protobuf_lower_bound() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if d.startswith("protobuf"))
    return re.search(r">=\s*([\d.]+)", spec).group(1)


def test_generated_module_records_the_current_proto_hash():
    header = re.search(r"^# proto-sha256: ([0-9a-f]{64})$", PB2.read_text(), re.MULTILINE)
    assert header, f"{PB2.name} has no proto-sha256 header; regenerate it with tools/gen_proto.py"
    assert header.group(1) == _gen_proto().proto_sha256(PROTO), (
        "proto/graphengine.proto changed since graphengine_pb2.py was generated; run "
        "tools/gen_proto.py (see its docstring for the grpcio-tools it needs)"
    )


def test_gencode_is_not_newer_than_the_protobuf_lower_bound():
    """Generated code refuses runtimes older than the protoc that made it."""
    gencode = re.search(r"^# Protobuf Python Version: ([\d.]+)$", PB2.read_text(), re.MULTILINE)
    assert gencode, "the generated module does not say which protobuf made it"
    bound = _protobuf_lower_bound()
    assert _version(gencode.group(1)) <= _version(bound), (
        f"graphengine_pb2.py needs protobuf >= {gencode.group(1)}, but pyproject.toml admits "
        f"protobuf {bound}"
    )


def test_the_generator_pin_matches_the_dev_extra():
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    assert f"grpcio-tools=={_gen_proto().GRPCIO_TOOLS_VERSION}" in dev


def test_regenerating_gives_the_committed_module():
    gen = _gen_proto()
    try:
        installed = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        pytest.skip("grpcio-tools is not installed; the hash check above still runs")
    if installed != gen.GRPCIO_TOOLS_VERSION:
        pytest.skip(
            f"grpcio-tools {installed} is installed; the module is generated with "
            f"{gen.GRPCIO_TOOLS_VERSION}, whose output differs"
        )
    assert gen.generate(PROTO) == PB2.read_text(encoding="utf-8")


def test_descriptor_matches_the_proto_text():
    """A cheap cross-check of the hash: every message of the .proto is in the module."""
    from graphengine.proto import graphengine_pb2 as pb

    declared = re.findall(r"^message (\w+)", PROTO.read_text(), re.MULTILINE)
    assert declared == list(pb.DESCRIPTOR.message_types_by_name)


@pytest.fixture(scope="module")
def pinned_env(tmp_path_factory) -> Path:
    """A virtual environment with the oldest protobuf pyproject.toml admits and the
    pinned grpcio-tools (which admits that protobuf); skips without a package index."""
    bound = _protobuf_lower_bound()
    env = tmp_path_factory.mktemp("pinned") / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            f"protobuf=={bound}",
            f"grpcio-tools=={_gen_proto().GRPCIO_TOOLS_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if install.returncode != 0:
        last = install.stderr.strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"cannot install protobuf=={bound} with pip (no package index?): {last[0]}")
    return python


@pytest.mark.slow
def test_module_imports_with_the_oldest_admitted_protobuf(pinned_env):
    bound = _protobuf_lower_bound()
    # Load the file alone: the environment has protobuf and nothing of ours.
    check = (
        f"import importlib.util as u, google.protobuf as p\n"
        f"s = u.spec_from_file_location('graphengine_pb2', {str(PB2)!r})\n"
        f"m = u.module_from_spec(s); s.loader.exec_module(m)\n"
        f"assert p.__version__ == {bound!r}, p.__version__\n"
        f"m.ModelProto.FromString(m.ModelProto(format_version_major=1)"
        f".SerializeToString())\n"
        f"print('ok', p.__version__)"
    )
    result = subprocess.run(
        [str(pinned_env), "-c", check], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {bound}"


@pytest.mark.slow
def test_pinned_generator_reproduces_the_committed_module(pinned_env):
    result = subprocess.run(
        [str(pinned_env), str(ROOT / "tools" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
