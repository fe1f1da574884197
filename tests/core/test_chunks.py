"""The chunk list: its arithmetic (table-driven), its parsing in the manifest, and what
``registry publish`` writes beside the artifact."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from gateway.core.chunks import DIGEST_BYTES, Chunking, digests, parse_list
from gateway.core.errors import ConfigError, FormatError
from gateway.core.manifest import ChunkList, parse_deployment
from tests.conftest import Registry

MIB = 1 << 20


@pytest.mark.parametrize(
    ("length", "size", "count", "last"),
    [
        (0, MIB, 0, 0),  # nothing: no chunk
        (1, MIB, 1, 1),
        (MIB - 1, MIB, 1, MIB - 1),
        (MIB, MIB, 1, MIB),  # exactly one chunk: the last one is whole
        (MIB + 1, MIB, 2, 1),
        (50 * MIB, MIB, 50, MIB),
        (10_000, 4096, 3, 10_000 - 8192),
    ],
)
def test_count_and_last_chunk_length(length: int, size: int, count: int, last: int) -> None:
    c = Chunking(length, size)
    assert c.count == count
    assert c.last_length == last
    assert sum(c.chunk_length(i) for i in range(c.count)) == length


@pytest.mark.parametrize(
    ("length", "first", "last", "covering"),
    [
        (10_000, 0, 0, range(0, 1)),
        (10_000, 0, 4095, range(0, 1)),
        (10_000, 0, 4096, range(0, 2)),
        (10_000, 4095, 4096, range(0, 2)),  # a range across a boundary needs both
        (10_000, 8192, 9_999, range(2, 3)),
        (10_000, 8192, 10**9, range(2, 3)),  # clamped to the artifact
        (10_000, 9_999, 9_999, range(2, 3)),  # the very last byte
        (10_000, 10_000, 10_001, range(0)),  # past the end: nothing
        (10_000, 5, 4, range(0)),  # empty
        (0, 0, 0, range(0)),
    ],
)
def test_chunks_covering_a_byte_range(length: int, first: int, last: int, covering: range) -> None:
    assert Chunking(length, 4096).covering(first, last) == covering


@pytest.mark.parametrize(
    ("nbytes", "within", "verified"),
    [(0, 0, 0), (4095, 0, 0), (4096, 1, 4096), (9_999, 2, 8192), (10_000, 3, 10_000), (10**9, 3, 10_000)],
)
def test_whole_chunks_within_a_prefix_and_back(nbytes: int, within: int, verified: int) -> None:
    c = Chunking(10_000, 4096)
    assert c.chunks_within(nbytes) == within
    assert c.verified_bytes(within) == verified


def test_bounds_and_bad_chunkings() -> None:
    c = Chunking(10_000, 4096)
    assert [c.bounds(i) for i in range(3)] == [(0, 4096), (4096, 8192), (8192, 10_000)]
    with pytest.raises(IndexError):
        c.bounds(3)
    for length, size in ((-1, 4096), (10, 0)):
        with pytest.raises(ValueError):
            Chunking(length, size)


def test_the_list_is_one_raw_digest_per_chunk_and_must_be_the_signed_one() -> None:
    data = os.urandom(10_000)
    listed = digests(data, 4096)
    assert len(listed) == 3 * DIGEST_BYTES
    assert listed[:32] == hashlib.sha256(data[:4096]).digest()
    c = Chunking(len(data), 4096)
    got = parse_list(listed, c, hashlib.sha256(listed).hexdigest())
    assert got[2] == hashlib.sha256(data[8192:]).digest()
    with pytest.raises(FormatError, match="is not the signed"):
        parse_list(listed[:-1] + b"\0", c, hashlib.sha256(listed).hexdigest())
    short = listed[:64]
    with pytest.raises(FormatError, match="expected 96"):
        parse_list(short, c, hashlib.sha256(short).hexdigest())
    assert digests(b"", 4096) == b""


BASE: dict[str, Any] = {
    "model_id": "m",
    "version": "1",
    "artifact_url": "artifacts/m/1/m.bin",
    "signature_url": "artifacts/m/1/m.bin.sig",
    "sha256": "a" * 64,
    "length": 10,
}


def test_the_manifest_field_is_parsed_and_kept_for_devices() -> None:
    field = {"size": MIB, "sha256": "b" * 64, "url": "artifacts/m/1/m.bin.chunks"}
    d = parse_deployment({**BASE, "chunks": field})
    assert d.chunks == ChunkList(MIB, "b" * 64, "artifacts/m/1/m.bin.chunks")
    assert d.to_device("x", "y")["chunks"] == field  # passed through; devices may ignore it
    assert parse_deployment(BASE).chunks is None  # without it: as before


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        ("1MiB", "expected an object"),
        ({"size": 100, "sha256": "b" * 64, "url": "u"}, "chunks.size"),
        ({"size": True, "sha256": "b" * 64, "url": "u"}, "chunks.size"),
        ({"size": MIB, "sha256": "B" * 64, "url": "u"}, "chunks.sha256"),
        ({"size": MIB, "sha256": "b" * 64}, "chunks.url"),
    ],
)
def test_a_bad_chunks_field_is_refused_with_its_reason(chunks: object, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        parse_deployment({**BASE, "chunks": chunks})


def test_publish_writes_the_list_beside_the_artifact(reg: Registry, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    manifest = reg.publish(data)
    listed = (reg.root / manifest["chunks"]["url"]).read_bytes()
    assert manifest["chunks"] == {
        "size": MIB,
        "sha256": hashlib.sha256(listed).hexdigest(),
        "url": manifest["artifact_url"] + ".chunks",
    }
    assert listed == digests(data, MIB)
    signed = json.loads(reg.index_bytes())["signed"]
    assert signed["deployments"][0]["chunks"] == manifest["chunks"]  # inside the signed index


def test_chunk_size_from_the_command_line(reg: Registry, tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(100_000))
    argv = ["registry", "publish", str(reg.root), str(model), "--key", str(reg.private_key)]
    argv += ["--model-id", "detector", "--site", "test-site"]
    assert cli.main([*argv, "--version", "1.0.0", "--chunk-size", "65536"]) == 0
    assert cli.main([*argv, "--version", "2.0.0", "--chunk-size", "0"]) == 0
    deps = {d["version"]: d for d in json.loads(reg.index_bytes())["signed"]["deployments"]}
    assert deps["1.0.0"]["chunks"]["size"] == 65536
    assert len((reg.root / deps["1.0.0"]["chunks"]["url"]).read_bytes()) == 2 * DIGEST_BYTES
    assert "chunks" not in deps["2.0.0"]  # 0: no chunk list, as before
    with pytest.raises(ConfigError, match="--chunk-size"):
        reg.publish(b"x", version="3.0.0", chunk_size=100)
