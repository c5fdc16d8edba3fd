"""Writes tests/data/mime/*.eml: a constructed corpus of hostile and malformed mail.

Every file here was built by this script for the tests; none is real mail. Run it again
(``python tests/data/make_mime_corpus.py``) after changing a case. All messages come
from ``maria@example.com`` (a contractor in the tests' configs), so their attachments
are downloaded and go through the store's file-naming code.
"""

from __future__ import annotations

import base64
from pathlib import Path

HERE = Path(__file__).parent / "mime"

HEAD = (
    "From: Maria Lopez <maria@example.com>\r\n"
    "To: owner@example.com\r\n"
    "Date: Tue, 06 Jan 2026 09:{minute:02d}:00 +0000\r\n"
    "Message-ID: <{name}@corpus.example>\r\n"
    "Subject: {subject}\r\n"
)


def head(name: str, subject: str, minute: int) -> str:
    return HEAD.format(name=name, subject=subject, minute=minute)


def attachment(disposition: str, data: bytes = b"deliverable bytes\n") -> str:
    return (
        "--B\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Disposition: attachment; {disposition}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(data).decode()}\r\n"
    )


def multipart(name: str, subject: str, minute: int, parts: list[str]) -> bytes:
    text = (
        head(name, subject, minute)
        + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + "--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
        + "".join(parts)
        + "--B--\r\n"
    )
    return text.encode()


def cases() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    names = [
        'filename="../../x"',
        'filename="/etc/passwd"',
        'filename="CON"',
        'filename="' + "a" * 300 + '.pdf"',
        "filename*=utf-8''nul%00byte.txt",
        "filename*=utf-8''..%2F..%2F.ssh%2Fauthorized_keys",
        'filename="=?utf-8?b?Li4vLi4vZXZpbC5zaA==?="',
        'filename="..\\\\..\\\\win.ini"',
        "filename*=utf-8''invoice%E2%80%AEfdp.exe",
        'filename=""',
        'filename="..."',
    ]
    out["traversal_names"] = multipart(
        "traversal", "Hostile attachment names", 1,
        [attachment(n, f"file {i}\n".encode()) for i, n in enumerate(names)])
    out["declared_2gb"] = multipart(
        "declared-2gb", "Claims to be 2 GB", 2,
        [attachment('filename="big.mov"; size=2147483648', b"tiny really\n")])
    out["no_boundary"] = (
        head("no-boundary", "Multipart without a boundary", 3)
        + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n"
        "--X\r\nContent-Type: text/plain\r\n\r\nbody without a declared boundary\r\n--X--\r\n"
    ).encode()
    out["no_close_boundary"] = (
        head("no-close", "Multipart never closed", 4)
        + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nthe text is still here\r\n"
        "--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        'filename="draft.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + base64.b64encode(b"%PDF-1.4 truncated").decode() + "\r\n"
    ).encode()
    out["bad_base64"] = (
        head("bad-base64", "Broken base64", 5)
        + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"
        "\r\n\r\nSGVsbG8gd29ybGQ!!!*not*base64***\r\n"
        "--B\r\nContent-Type: image/png\r\nContent-Disposition: attachment; "
        'filename="mock.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        "iVBORw0KGgo=====%%%%\r\n--B--\r\n"
    ).encode()
    out["unknown_charset"] = (
        head("unknown-charset", "=?x-klingon?q?Qapla=27?=", 6)
        + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-klingon\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + b"caf\xe9 and \xff\xfe bytes\r\n"
    out["eight_bit_headers"] = (
        b"From: Mar\xeda L\xf3pez <maria@example.com>\r\n"
        b"To: owner@example.com\r\n"
        b"Date: Tue, 06 Jan 2026 09:07:00 +0000\r\n"
        b"Message-ID: <eight-bit@corpus.example>\r\n"
        b"Subject: R\xe9sum\xe9 \x82\x83 \xe3\x81\x82 raw 8-bit\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="d\xe9sign\xff.pdf"\r\n'
        b"Content-Transfer-Encoding: b\xe4se64\r\n\r\nJVBERi0xLjQK\r\n--B--\r\n"
    )
    out["non_utf8_headers"] = (
        head("non-utf8", "=?shift_jis?b?k/qWe4zq?= =?iso-8859-1?q?caf=E9?= =?utf-8?q?=FF=FE?=", 8)
        + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=shift_jis\r\n\r\n"
    ).encode() + "日本語の本文\r\n".encode("shift_jis")
    nested = head("nested-200", "Two hundred levels deep", 9) + "MIME-Version: 1.0\r\n"
    depth = 200
    nested += 'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
    for level in range(1, depth):
        nested += f'--b{level - 1}\r\nContent-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'
    nested += f"--b{depth - 1}\r\nContent-Type: text/plain\r\n\r\nat the bottom\r\n"
    for level in reversed(range(depth)):
        nested += f"--b{level}--\r\n"
    out["nested_200"] = nested.encode()
    many = [
        f'--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename="p{i}.txt"'
        f"\r\n\r\npart {i}\r\n"
        for i in range(1500)
    ]
    out["many_parts"] = multipart("many-parts", "Fifteen hundred parts", 10, many)
    out["html_script"] = (
        head("html-script", "Portfolio <script>alert(1)</script>", 11)
        + "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><head><script>fetch('http://127.0.0.1:9/steal')</script></head><body>"
        "<p>Here is my portfolio.</p><script>document.cookie</script>"
        '<img src="http://127.0.0.1:9/pixel.gif" onerror="alert(1)">'
        '<iframe src="http://169.254.169.254/"></iframe>'
        '<a href="javascript:alert(1)">click</a><p>Thanks, Maria</p></body></html>\r\n'
    ).encode()
    out["no_headers_at_all"] = b"\x00\x01\x02 just binary junk \xff\xfe\r\n\r\n\x00"
    return out


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, data in cases().items():
        (HERE / f"{name}.eml").write_bytes(data)


if __name__ == "__main__":
    main()
