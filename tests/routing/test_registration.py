"""What the registry accepts: worker URLs, the allow-list of hosts, the token file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.exceptions import ConfigurationError
from sloguard.routing.registration import (
    WorkerHosts,
    read_or_create_token,
    read_token_file,
    worker_url,
)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("http://127.0.0.1:9001/", "http://127.0.0.1:9001"),
        ("HTTPS://Pdf.Example.Internal", "https://pdf.example.internal"),
        ("http://worker_1.svc:8080/base/", "http://worker_1.svc:8080/base"),
        ("http://[::1]:9001", "http://[::1]:9001"),
        ("http://10.0.0.1:00080", "http://10.0.0.1:80"),
        ("https://h:65535/a%20b", "https://h:65535/a%20b"),
    ],
)
def test_a_worker_url_is_normalised(url: str, normalised: str) -> None:
    assert worker_url(url) == normalised


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h", "must start with http:// or https://"),
        ("127.0.0.1:9001", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("http://h:0", "port must be a number from 1 to 65535"),
        ("http://127.0.0.1:99999", "port must be a number from 1 to 65535"),
        ("http://h:65536", "port must be a number from 1 to 65535"),
        ("http://h:-1", "port must be a number from 1 to 65535"),
        ("http://h:http", "port must be a number from 1 to 65535"),
        ("http://h:", "port must be a number from 1 to 65535"),
        ("http://user:pw@h", "must not contain user info"),
        ("http://@h", "must not contain user info"),
        ("http://h/?next=x", "must not have a query or a fragment"),
        ("http://h#x", "must not have a query or a fragment"),
        ("http://", "must name a host"),
        ("http://:80", "must name a host"),
        ("http://a..b", "must name a host"),
        ("http://-a", "must name a host"),
        ("http://a b", "must be printable ASCII without spaces"),
        ("http://h\r\nX: y", "must be printable ASCII without spaces"),
        ("http://bücher.de", "must be printable ASCII without spaces"),
        ("http://[::1", "is not a URL"),
        ("http://[fe80::1%25eth0]:80", "must not name an IPv6 zone"),
        ("http://2130706433", "'2130706433' is not an IPv4 address"),
        ("http://0x7f.1", "'0x7f.1' is not an IPv4 address"),
        ("http://127.000.0.1", "'127.000.0.1' is not an IPv4 address"),
        ("http://h/a\\b", "its path may hold only"),
        ("http://h/" + "a" * 2_100, "must be at most 2048 characters"),
    ],
)
def test_a_bad_worker_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        worker_url(url)


@given(st.text(max_size=60))
def test_any_text_is_a_url_or_a_value_error(text: str) -> None:
    try:
        url = worker_url(text)
    except ValueError:
        return
    assert worker_url(url) == url  # normalising is idempotent


def test_the_allow_list_takes_networks_names_and_subdomains() -> None:
    hosts = WorkerHosts.parse(" 127.0.0.0/8, 10.1.2.3 ,::1,Example.Internal,*.svc.local")
    assert str(hosts) == "127.0.0.0/8,10.1.2.3/32,::1/128,example.internal,*.svc.local"
    allowed = ["http://127.9.9.9", "http://10.1.2.3:1", "http://[::1]:8", "http://example.internal"]
    allowed += ["http://a.svc.local", "http://a.b.svc.local:9", "http://[::ffff:127.0.0.1]"]
    refused = ["http://10.1.2.4", "http://[::2]", "http://x.example.internal", "http://svc.local"]
    refused += ["http://localhost", "http://evilsvc.local", "http://example.internal.evil"]
    assert [url for url in allowed if not hosts.allows(url)] == []
    assert [url for url in refused if hosts.allows(url)] == []


@pytest.mark.parametrize("entries", ["", ",", "10.0.0.0/33", "a b", "*.", "http://x", "*"])
def test_a_bad_allow_list_entry_is_named(entries: str) -> None:
    with pytest.raises(ConfigurationError, match="worker hosts: "):
        WorkerHosts.parse(entries)


def test_the_token_file_is_made_once_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "registry.token"
    token = read_or_create_token(path)

    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_token(path) == token  # a restart keeps it
    assert read_token_file(path) == token
    assert [p.name for p in tmp_path.iterdir()] == ["registry.token"]  # no draft left


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.token"
    path.write_text("s3cret\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match=r"readable by other users \(mode 0644\)"):
        read_or_create_token(path)
    os.chmod(path, 0o600)
    assert read_or_create_token(path) == "s3cret"
    path.write_text("\n")
    with pytest.raises(ConfigurationError, match="not a token"):
        read_token_file(path)
    with pytest.raises(ConfigurationError, match="cannot write the registry token"):
        read_or_create_token(tmp_path / "missing" / "registry.token")
