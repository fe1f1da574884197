"""Build a real SWUpdate image (``.swu``) for the tests: a cpio archive (the "crc" variant of the
SVR4 "newc" format, ``cpio -H crc``, written here because Debian's ``cpio`` is not on this box)
holding ``sw-description`` first, its CMS signature (``openssl cms -sign``, what Debian's SWUpdate
build requires: it is built with signed images) and the images, each with its sha256 in the
description. One image, installed by the ``rawfile`` handler as a file into a folder the test
chose, so the install is real and harmless."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

TRAILER = "TRAILER!!!"
HW_BOARD, HW_REVISION = "ddi-test", "1.0"  # swupdate -H ddi-test:1.0 (no /etc/hwrevision here)


def _entry(name: str, data: bytes, ino: int) -> bytes:
    fields = [ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, sum(data) & 0xFFFFFFFF]
    head = b"070702" + b"".join(f"{v:08X}".encode() for v in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def cpio_crc(files: list[tuple[str, bytes]]) -> bytes:
    out = b"".join(_entry(name, data, i + 1) for i, (name, data) in enumerate(files))
    out += _entry(TRAILER, b"", 0)
    return out + b"\0" * (-len(out) % 512)


@dataclass(frozen=True)
class SigningCert:
    cert: Path  # what the device is given (swupdate -k)
    key: Path

    @classmethod
    def make(cls, folder: Path) -> SigningCert:
        """A self-signed signing certificate for the cloud's SWUpdate images (test only)."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "swu-cert.pem", folder / "swu-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=swu-test-signer",
             "-addext", "keyUsage=digitalSignature", "-addext", "extendedKeyUsage=emailProtection"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cls(cert, key)

    def sign(self, description: Path) -> bytes:
        out = description.parent / (description.name + ".sig")
        subprocess.run(
            ["openssl", "cms", "-sign", "-in", str(description), "-out", str(out), "-signer", str(self.cert),
             "-inkey", str(self.key), "-outform", "DER", "-nosmimecap", "-binary"],
            check=True, capture_output=True,
        )  # fmt: skip
        return out.read_bytes()


def build_swu(
    folder: Path,
    signer: SigningCert,
    *,
    version: str,
    payload: bytes,
    target: Path,
    declared: bytes | None = None,
) -> Path:
    """``folder/update-<version>.swu`` installing ``payload`` as the file ``target``. ``declared``:
    the bytes whose sha256 the (signed) description names instead, so the install fails."""
    folder.mkdir(parents=True, exist_ok=True)
    description = f"""software =
{{
    version = "{version}";
    description = "ota-gateway DDI test image";
    hardware-compatibility: [ "{HW_REVISION}" ];
    files: (
        {{
            filename = "payload.bin";
            path = "{target}";
            sha256 = "{hashlib.sha256(payload if declared is None else declared).hexdigest()}";
        }}
    );
}}
"""
    desc_path = folder / f"sw-description-{version}"
    desc_path.write_text(description)
    sig = signer.sign(desc_path)
    swu = folder / f"update-{version}.swu"
    swu.write_bytes(
        cpio_crc(
            [("sw-description", description.encode()), ("sw-description.sig", sig), ("payload.bin", payload)]
        )
    )
    return swu
