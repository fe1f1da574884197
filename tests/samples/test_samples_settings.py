"""The ``[samples]`` section: every key checked at start-up with the one-line ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.service.settings import load


@pytest.mark.parametrize(
    ("toml", "key", "expect"),
    [
        ("[samples]\nmax_bytes = 0\n", "samples.max_bytes", "greater than 0"),
        ("[samples]\nbudget_bytes_per_day = -1\n", "samples.budget_bytes_per_day", "at least 0"),
        ("[samples]\ndevice_share_max = 1.5\n", "samples.device_share_max", "from 0 to 1"),
        ("[samples]\nupload_url = 'ftp://x'\n", "samples.upload_url", "http://"),
        ("[samples]\nmax_embedding_dims = 0\n", "samples.max_embedding_dims", "1 to 65536"),
        ("[samples]\nraw = 'yes'\n", "samples.raw", "true or false"),
        ("[samples]\nbudget = 5\n", "samples.budget", "a known key"),
        (
            "[samples]\nenabled = true\nraw = true\nmax_bytes = 1000000\n",
            "samples.max_bytes",
            "http.max_body_bytes",
        ),
    ],
)
def test_a_bad_samples_key_is_one_line_naming_file_key_and_expectation(
    tmp_path: Path, toml: str, key: str, expect: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert err.value.key == key and expect in err.value.expected
    assert "\n" not in str(err.value)


def test_the_defaults_load() -> None:
    s = load(None, environ={}).samples
    assert not s.enabled and not s.raw and s.budget_bytes_per_day == 64 << 20
