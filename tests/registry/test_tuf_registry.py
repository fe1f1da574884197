"""The registry as a TUF repository, driven through the ``ota-gateway registry`` command line and
read by python-tuf's own client over a real static server: thresholds signed in separate steps,
delegations per model, root rotation, revocation, and private keys kept out of the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tuf.api import exceptions as tuf_errors

from gateway import registry
from tests.registry.tufkit import TufRegistry, make_tuf_registry, run, static_server, updater


@pytest.fixture
def treg(tmp_path: Path) -> TufRegistry:
    return make_tuf_registry(tmp_path)


def _device(tmp: Path, reg: TufRegistry, base: str, name: str = "device"):  # type: ignore[no-untyped-def]
    return updater(tmp / name, base + "metadata/", base, reg.first_root)


def test_init_makes_a_two_of_three_root_with_consistent_snapshots_and_no_private_key_inside(
    treg: TufRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = json.loads(treg.first_root)["signed"]
    assert signed["consistent_snapshot"] is True
    assert signed["roles"]["root"]["threshold"] == 2 and len(signed["roles"]["root"]["keyids"]) == 3
    assert len(json.loads(treg.first_root)["signatures"]) == 3
    for role in ("targets", "snapshot", "timestamp"):
        assert signed["roles"][role]["threshold"] == 1
    for path in treg.root.rglob("*"):
        assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path
    assert sorted(p.name for p in treg.keys.iterdir()) == [
        "root-1",
        "root-2",
        "root-3",
        "snapshot",
        "targets",
        "timestamp",
    ]
    inside = tmp_path / "other"
    inside.mkdir()
    capsys.readouterr()
    assert run("registry", "init", str(inside), f"--keys={inside / 'keys'}") == 2
    assert "--keys: expected a private key kept outside the registry folder" in capsys.readouterr().err
    assert run("registry", "init", str(treg.root), f"--keys={tmp_path / 'k2'}") == 2  # already one


def test_a_model_signed_by_two_of_its_keys_in_separate_steps_reaches_python_tuf(
    treg: TufRegistry, tmp_path: Path
) -> None:
    treg.delegate("detector", "a", "b", threshold=2)
    data = os.urandom(70_000)
    treg.publish(data, "detector", "1.0.0", "a", "--percent=12.5", "--cohort=hw:rev2")
    assert (treg.root / "staged" / "detector.json").exists()  # one of two: not published
    with static_server(treg.root) as base:
        device = _device(tmp_path, treg, base, "early")
        device.refresh()
        with pytest.raises(tuf_errors.RepositoryError):  # the delegated role is not in the snapshot
            device.get_targetinfo("artifacts/detector/1.0.0/detector-1.0.0.onnx")
        assert (
            run(
                "registry",
                "sign",
                str(treg.root),
                "detector",
                f"--key={treg.key('b') / 'private.pem'}",
                f"--online-keys={treg.keys}",
            )
            == 0
        )
        assert not (treg.root / "staged" / "detector.json").exists()
        device = _device(tmp_path, treg, base)
        info = device.get_targetinfo("artifacts/detector/1.0.0/detector-1.0.0.onnx")
        assert info is not None
        manifest = json.loads(info.custom["manifest"])
        assert (manifest["model_id"], manifest["version"], manifest["rollout_percentage"]) == (
            "detector",
            "1.0.0",
            12.5,
        )
        assert manifest["target_cohort"] == "hw:rev2" and manifest["sha256"] == info.hashes["sha256"]
        assert Path(device.download_target(info)).read_bytes() == data
    # The seed's contract still holds beside TUF: a detached signature over the file.
    sig = (treg.root / "artifacts/detector/1.0.0/detector-1.0.0.onnx.sig").read_bytes()
    pub = serialization.load_pem_public_key((treg.key("a") / "public.pem").read_bytes())
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))


def test_a_model_key_cannot_publish_another_model(treg: TufRegistry, tmp_path: Path) -> None:
    treg.delegate("detector", "a")
    treg.delegate("counter", "b")
    treg.publish(os.urandom(1000), "counter", "1.0.0", "a")  # detector's key on counter's role
    assert (treg.root / "staged" / "counter.json").exists()
    with static_server(treg.root) as base:
        device = _device(tmp_path, treg, base)
        device.refresh()
        with pytest.raises(tuf_errors.RepositoryError):
            device.get_targetinfo("artifacts/counter/1.0.0/counter-1.0.0.onnx")


def test_root_rotation_needs_two_root_keys_and_clients_follow_the_chain(
    treg: TufRegistry, tmp_path: Path
) -> None:
    new_ts = treg.key("new-timestamp")
    rotate = [
        "registry",
        "root",
        "rotate",
        str(treg.root),
        "--role=timestamp",
        f"--add={new_ts / 'public.pem'}",
        f"--remove={treg.keys / 'timestamp' / 'public.pem'}",
    ]
    assert run(*rotate, f"--key={treg.keys / 'root-1' / 'private.pem'}") == 0
    assert not (treg.root / "metadata" / "2.root.json").exists()  # one of two root keys: staged
    assert (
        run("registry", "sign", str(treg.root), "root", f"--key={treg.keys / 'root-3' / 'private.pem'}") == 0
    )
    root2 = json.loads((treg.root / "metadata" / "2.root.json").read_bytes())
    assert len(root2["signatures"]) == 2
    # The old timestamp key no longer signs; the new one does.
    assert (
        run("registry", "timestamp", str(treg.root), f"--key={treg.keys / 'timestamp' / 'private.pem'}") == 2
    )
    assert run("registry", "timestamp", str(treg.root), f"--key={new_ts / 'private.pem'}") == 0
    with static_server(treg.root) as base:
        device = _device(tmp_path, treg, base)
        device.refresh()
        assert device._trusted_set.root.version == 2


def test_revoking_a_model_key_stops_what_it_signed_until_the_others_sign_again(
    treg: TufRegistry, tmp_path: Path
) -> None:
    treg.delegate("detector", "a")
    treg.publish(b"x" * 5000, "detector", "1.0.0", "a")
    path = "artifacts/detector/1.0.0/detector-1.0.0.onnx"
    assert (
        run(
            "registry",
            "revoke",
            str(treg.root),
            "detector",
            str(treg.key("a") / "public.pem"),
            f"--key={treg.keys / 'targets' / 'private.pem'}",
            f"--online-keys={treg.keys}",
        )
        == 0
    )
    with static_server(treg.root) as base:
        with pytest.raises(tuf_errors.UnsignedMetadataError):
            _device(tmp_path, treg, base, "after-revoke").get_targetinfo(path)
        treg.delegate("detector", "c")
        assert (
            run(
                "registry",
                "sign",
                str(treg.root),
                "detector",
                f"--key={treg.key('c') / 'private.pem'}",
                f"--online-keys={treg.keys}",
            )
            == 0
        )
        assert _device(tmp_path, treg, base, "after-resign").get_targetinfo(path) is not None


def test_bad_commands_get_one_line(treg: TufRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    key = f"--key={treg.key('a') / 'private.pem'}"
    registry.keygen(treg.root / "oops")  # a key someone left inside the registry: it would be published
    assert (
        run("registry", "sign", str(treg.root), "targets", f"--key={treg.root / 'oops' / 'private.pem'}") == 2
    )
    assert run("registry", "timestamp", str(treg.root), f"--key={treg.root / 'oops' / 'private.pem'}") == 2
    assert run("registry", "sign", str(treg.root), "nosuchrole", key) == 2
    assert run("registry", "revoke", str(treg.root), "detector", "feed", key) == 2
    assert (
        run(
            "registry",
            "delegate",
            str(treg.root),
            "snapshot",
            f"--key={treg.key('a') / 'public.pem'}",
            f"--targets-key={treg.keys / 'targets' / 'private.pem'}",
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(
        line.startswith("ota-gateway: configuration error: command line:") for line in err
    )


def test_publish_checks_the_tuf_side_before_writing_anything(
    treg: TufRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x" * 100)
    key = f"--key={treg.key('a') / 'private.pem'}"
    args = ["registry", "publish", str(treg.root), str(model), key, "--model-id=detector", "--version=1.0.0"]
    assert run(*args) == 2  # no --online-keys
    assert run(*args, f"--online-keys={treg.keys}") == 2  # detector not delegated
    err = capsys.readouterr().err
    assert "--online-keys: expected" in err and "a model delegated first (registry delegate)" in err
    assert not (treg.root / "index.json").exists() and not (treg.root / "artifacts").exists()


def test_a_two_key_targets_role_signs_a_delegation_in_two_steps(treg: TufRegistry, tmp_path: Path) -> None:
    second = treg.key("targets-2")
    roots = [f"--key={treg.keys / f'root-{i}' / 'private.pem'}" for i in (2, 3)]
    assert run("registry", "root", "rotate", str(treg.root), "--role=targets", f"--add={second / 'public.pem'}",
               "--threshold=2", *roots, f"--online-keys={treg.keys}") == 0  # fmt: skip
    treg.delegate("detector", "a")  # signed by the first targets key only: staged
    assert (treg.root / "staged" / "targets.json").exists()
    assert run("registry", "sign", str(treg.root), "targets", f"--key={second / 'private.pem'}",
               f"--online-keys={treg.keys}") == 0  # fmt: skip
    treg.publish(b"m" * 2000, "detector", "1.0.0", "a")
    with static_server(treg.root) as base:
        device = _device(tmp_path, treg, base)
        assert device.get_targetinfo("artifacts/detector/1.0.0/detector-1.0.0.onnx") is not None
        assert device._trusted_set.root.roles["targets"].threshold == 2
