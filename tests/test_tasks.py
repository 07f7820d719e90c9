"""The project's task runner: the docs server steps aside when its port is taken."""

from __future__ import annotations

import socket

import pytest

import tasks


def test_docs_serve_takes_the_next_free_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the default port taken (by the demo, say), the next free one is used."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        address = tasks.docs_address(port=port)
    host, _, chosen = address.partition(":")
    assert host == "127.0.0.1"
    assert int(chosen) > port
    assert capsys.readouterr().out == (
        f"+ port {port} is taken (the demo?); serving the docs on "
        f"http://{address} instead\n"
    )


def test_docs_serve_keeps_a_free_default_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A free default port is used as it is, silently."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert tasks.docs_address(port=port) == f"127.0.0.1:{port}"
    assert capsys.readouterr().out == ""


def test_docs_serve_says_what_to_do_when_no_port_is_free(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No traceback: one line that says how to choose a port, and status 2."""

    class Taken(socket.socket):
        def bind(self, address: object) -> None:
            raise OSError(98, "Address already in use")

    monkeypatch.setattr(socket, "socket", Taken)
    with pytest.raises(SystemExit) as info:
        tasks.docs_address(port=8000)
    assert info.value.code == 2
    assert capsys.readouterr().out == (
        "ports 8000 to 8019 are all taken; choose one with "
        "`python3 tasks.py docs serve --dev-addr 127.0.0.1:PORT`\n"
    )
