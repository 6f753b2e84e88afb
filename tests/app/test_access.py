"""What a browser user may make the server read: data roots, public URLs, nothing else."""

from __future__ import annotations

import socket

import pytest

from refiner.app import access


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch):
    monkeypatch.delenv(access.ROOTS_ENV, raising=False)
    monkeypatch.delenv(access.PRIVATE_ENV, raising=False)


def fake_dns(monkeypatch, table: dict[str, list[str]]) -> None:
    def getaddrinfo(host, port, *a, **k):
        if host not in table:
            raise socket.gaierror("not found")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    monkeypatch.setattr(access.socket, "getaddrinfo", getaddrinfo)


def test_server_paths_are_refused_alike_whether_or_not_they_exist(tmp_path):
    real = tmp_path / "tile.tif"
    real.write_bytes(b"II*\x00")
    messages = set()
    for text in (str(real), str(tmp_path / "missing.tif"), "/etc/passwd", "relative/tile.tif", "tile.tif"):
        with pytest.raises(ValueError) as info:
            access.check_source(text)
        messages.add(str(info.value))
    assert len(messages) == 1  # one text for all: nothing learnt about the disk
    assert "cannot be read from the browser" in messages.pop()


def test_paths_under_a_data_root_are_allowed_and_escapes_are_not(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.tif"
    outside.write_bytes(b"x")
    (root / "link.tif").symlink_to(outside)
    monkeypatch.setenv(access.ROOTS_ENV, str(root))
    assert access.check_source(str(root / "sub" / "a.tif")) == str(root / "sub" / "a.tif")
    for escape in (str(root / ".." / "secret.tif"), str(root / "link.tif"), str(tmp_path / "data2" / "a.tif")):
        with pytest.raises(ValueError, match=r"under the server's data folders \(.*data\)"):
            access.check_source(escape)
    assert access.check_source(str(outside), extra_roots=(tmp_path,)) == str(outside)  # e.g. shipped assets


@pytest.mark.parametrize(
    "text",
    ["/vsicurl/http://127.0.0.1:8000/x.tif", "/vsizip//tmp/a.zip/x.tif", "vsis3/bucket/x.tif", "/vsimem/x"],
)
def test_gdal_virtual_paths_are_always_refused(text, tmp_path, monkeypatch):
    monkeypatch.setenv(access.ROOTS_ENV, "/")  # even with every folder a data root
    with pytest.raises(ValueError, match="cannot be read from the browser"):
        access.check_source(text)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.tif", "gs://b/x.tif", "http:///x.tif"])
def test_only_http_and_https_urls(url):
    with pytest.raises(ValueError, match="only http:// and https://"):
        access.check_source(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8501/x.tif",
        "http://[::1]/x.tif",
        "http://10.0.0.5/x.tif",
        "https://192.168.1.1/x.tif",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0:22/",
        "http://[fe80::1]/x.tif",
    ],
)
def test_private_loopback_and_link_local_hosts_are_refused(url):
    with pytest.raises(ValueError, match="private, loopback or link-local"):
        access.check_url(url)


def test_every_address_of_a_host_name_is_checked(monkeypatch):
    fake_dns(monkeypatch, {"good.example": ["93.184.216.34"], "sneaky.example": ["93.184.216.34", "127.0.0.1"]})
    assert access.check_url("https://good.example/x.tif") == "https://good.example/x.tif"
    with pytest.raises(ValueError, match="'sneaky.example' is on a private"):
        access.check_url("https://sneaky.example/x.tif")
    with pytest.raises(ValueError, match="cannot be found"):
        access.check_url("https://nowhere.example/x.tif")


def test_the_operator_can_allow_private_hosts(monkeypatch):
    monkeypatch.setenv(access.PRIVATE_ENV, "1")
    assert access.check_url("http://10.0.0.5/x.tif") == "http://10.0.0.5/x.tif"
    with pytest.raises(ValueError, match="only http"):
        access.check_url("file:///etc/passwd")  # the scheme rule still holds
