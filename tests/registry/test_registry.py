"""``registry publish`` retires superseded deployments: an index lists what is still wanted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway import cli
from gateway.core.errors import ConfigError
from tests.conftest import Registry


def listed(reg: Registry) -> list[tuple[str, str, str]]:
    signed = json.loads(reg.index_bytes())["signed"]
    return sorted((d["model_id"], d["version"], d["target_cohort"]) for d in signed["deployments"])


def test_publish_keeps_the_newest_two_of_a_model_and_cohort(reg: Registry) -> None:
    for v in ("1.0.0", "1.10.0", "1.2.0"):  # published out of order: versions decide, not time
        reg.publish(os.urandom(100), version=v)
    reg.publish(os.urandom(100), version="0.9.0", cohort="hw:rev1")
    reg.publish(os.urandom(100), model_id="counter", version="1.0.0")
    reg.publish(os.urandom(100), version="0.8.0", min_firmware="1.0.0")  # another firmware range
    assert listed(reg) == [
        ("counter", "1.0.0", ""),
        ("detector", "0.8.0", ""),
        ("detector", "0.9.0", "hw:rev1"),
        ("detector", "1.10.0", ""),
        ("detector", "1.2.0", ""),
    ]
    assert (reg.root / "artifacts/detector/1.0.0/detector-1.0.0.bin").exists()  # files stay


def test_keep_from_the_command_line(reg: Registry, tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        model.write_bytes(os.urandom(100))
        argv = ["registry", "publish", str(reg.root), str(model), "--key", str(reg.private_key)]
        argv += ["--model-id", "detector", "--version", v, "--site", "test-site", "--keep", "3"]
        assert cli.main(argv) == 0
    assert [v for _m, v, _c in listed(reg)] == ["1.0.0", "2.0.0", "3.0.0"]
    model.write_bytes(os.urandom(100))
    argv[-1], argv[argv.index("--version") + 1] = "1", "4.0.0"
    assert cli.main(argv) == 0
    assert [v for _m, v, _c in listed(reg)] == ["4.0.0"]
    with pytest.raises(ConfigError, match="--keep"):
        reg.publish(os.urandom(100), version="5.0.0", keep=0)


def test_a_drift_reference_from_the_command_line_is_checked_and_signed_in(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(100))
    profile = tmp_path / "profile.json"
    good = {"pc1": {"pos": {"1": 40}, "neg": {"2": 7}, "zero": 3, "zero_width": 0.01}}
    profile.write_text(json.dumps(good))
    argv = ["registry", "publish", str(reg.root), str(model), "--key", str(reg.private_key),
            "--model-id", "detector", "--version", "1.0.0", "--site", "test-site",
            "--drift-reference", str(profile)]  # fmt: skip
    assert cli.main(argv) == 0
    (d,) = json.loads(reg.index_bytes())["signed"]["deployments"]
    assert d["drift_reference"] == good
    profile.write_text(json.dumps({"pc1": {"pos": {"1": -40}}}))
    argv[argv.index("--version") + 1] = "2.0.0"
    assert cli.main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert "--drift-reference" in err and "pos.1" in err and "\n" not in err
    assert [v for _m, v, _c in listed(reg)] == ["1.0.0"]  # nothing published
