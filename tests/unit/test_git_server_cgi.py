"""tests.support.git_server's reading of ``git http-backend``'s CGI output: the one copy
pytest's in-process server and Molecule's host-side server (the same file run as a script)
both use."""

from __future__ import annotations

from tests.support.git_server import parse_cgi_reply


def test_a_reply_without_status_is_200_with_its_headers_and_body() -> None:
    output = (
        b"Content-Type: application/x-git-upload-pack-advertisement\r\n"
        b"Cache-Control: no-cache\r\n\r\n001e# service=git-upload-pack\n"
    )
    assert parse_cgi_reply(output) == (
        200,
        [
            ("Content-Type", "application/x-git-upload-pack-advertisement"),
            ("Cache-Control", "no-cache"),
        ],
        b"001e# service=git-upload-pack\n",
    )


def test_a_status_header_sets_the_status_and_bare_newlines_end_the_head() -> None:
    output = b"Status: 404 Not Found\nContent-Type: text/plain\n\nRepository not exported.\r\n\r\n"
    assert parse_cgi_reply(output) == (
        404,
        [("Content-Type", "text/plain")],
        b"Repository not exported.\r\n\r\n",
    )
