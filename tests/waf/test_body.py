"""Request body processors pinned to libmodsecurity3's behaviour."""

from __future__ import annotations

import pytest

from palisade.waf._body import MULTIPART_BUF_SIZE, BodyLimits, BodyResult, process_body

LIMITS = BodyLimits()
CT = "multipart/form-data; boundary=XyZ"
STRICT_PARTS = (
    "MULTIPART_BOUNDARY_QUOTED",
    "MULTIPART_BOUNDARY_WHITESPACE",
    "MULTIPART_DATA_BEFORE",
    "MULTIPART_DATA_AFTER",
    "MULTIPART_HEADER_FOLDING",
    "MULTIPART_LF_LINE",
    "MULTIPART_MISSING_SEMICOLON",
    "MULTIPART_INVALID_QUOTING",
    "MULTIPART_INVALID_PART",
    "MULTIPART_INVALID_HEADER_FOLDING",
    "MULTIPART_FILE_LIMIT_EXCEEDED",
)


def multipart(body: bytes, content_type: str = CT, limits: BodyLimits = LIMITS) -> BodyResult:
    return process_body(body, content_type, None, limits)


def field(name: str, value: bytes, boundary: bytes = b"XyZ") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'.encode()
    return b"--" + boundary + b"\r\n" + disposition + b"\r\n\r\n" + value + b"\r\n"


def end(boundary: bytes = b"XyZ") -> bytes:
    return b"--" + boundary + b"--\r\n"


def set_flags(result: BodyResult) -> set[str]:
    return {name for name, value in result.multipart.items() if value}


# --------------------------------------------------------------------------------------------
# processor choice and limits


@pytest.mark.parametrize(
    ("content_type", "processor"),
    [
        ("application/x-www-form-urlencoded", "URLENCODED"),
        ("Application/X-WWW-Form-Urlencoded; charset=utf-8", "URLENCODED"),
        ("multipart/form-data; boundary=a", "MULTIPART"),
        ("MULTIPART/FORM-DATA; boundary=a", "MULTIPART"),
        ("application/json", None),  # JSON and XML only through ctl:requestBodyProcessor
        ("text/xml", None),
        (None, None),
        ("multipart/mixed; boundary=a", None),
    ],
)
def test_processor_from_content_type(content_type: str | None, processor: str | None) -> None:
    assert process_body(b"a=1", content_type, None, LIMITS).processor == processor


def test_explicit_processor_wins_and_unknown_is_none() -> None:
    result = process_body(b'{"a":1}', "application/x-www-form-urlencoded", "json", LIMITS)
    assert result.processor == "JSON"
    assert process_body(b"a=1", None, "TEXT", LIMITS).processor is None


def test_body_limit_reject_processes_nothing() -> None:
    limits = BodyLimits(body_limit=5)
    result = process_body(b"a=1&b=2&c=3", "application/x-www-form-urlencoded", None, limits)
    assert result.exceeded and result.args_post == ()


def test_body_limit_process_partial_cuts_the_body() -> None:
    limits = BodyLimits(body_limit=5, limit_action="ProcessPartial")
    result = process_body(b"a=1&b=2&c=3", "application/x-www-form-urlencoded", None, limits)
    assert result.exceeded and result.args_post == (("a", "1"), ("b", ""))


def test_body_at_the_limit_is_not_exceeded() -> None:
    limits = BodyLimits(body_limit=3)
    result = process_body(b"a=1", "application/x-www-form-urlencoded", None, limits)
    assert not result.exceeded and result.args_post == (("a", "1"),)


# --------------------------------------------------------------------------------------------
# URLENCODED


def test_urlencoded_arguments() -> None:
    result = process_body(
        b"a=1&b=x+y%21&c&=d&e=%zz&", "application/x-www-form-urlencoded", None, LIMITS
    )
    assert result.args_post == (("a", "1"), ("b", "x y!"), ("c", ""), ("", "d"), ("e", "%zz"))
    assert result.urlencoded_error
    assert result.error is None


def test_urlencoded_arguments_limit() -> None:
    body = b"&".join(b"a%d=1" % i for i in range(10))
    result = process_body(body, None, "URLENCODED", BodyLimits(arguments_limit=4))
    assert [name for name, _ in result.args_post] == ["a0", "a1", "a2", "a3"]
    assert not result.exceeded  # only the body limit counts as INBOUND_DATA_ERROR
    unlimited = process_body(body, None, "URLENCODED", BodyLimits(arguments_limit=0))
    assert len(unlimited.args_post) == 10 and not unlimited.exceeded


# --------------------------------------------------------------------------------------------
# MULTIPART: a well-formed body


def test_multipart_fields_and_files() -> None:
    body = (
        field("name", b"Brian Rectanus")
        + field("email", b"brian@example.com")
        + b"--XyZ\r\n"
        + b'Content-Disposition: form-data; name="image"; filename="image.jpg"\r\n'
        + b"Content-Type: image/jpeg\r\n\r\n"
        + b"BINARY\r\nDATA\n\x00\xff\r\n"
        + end()
    )
    result = multipart(body)
    assert result.processor == "MULTIPART"
    assert result.error is None
    assert result.args_post == (("name", "Brian Rectanus"), ("email", "brian@example.com"))
    (image,) = result.files
    assert (image.field, image.filename) == ("image", "image.jpg")
    assert image.content == "BINARY\r\nDATA\n\x00\xff"  # the CRLF before the boundary is not data
    assert image.size == len(image.content)
    assert image.headers[1] == ("Content-Type", "image/jpeg")
    assert ("image", "Content-Type: image/jpeg\r\n") in result.multipart_part_headers
    assert (
        "name",
        'Content-Disposition: form-data; name="name"\r\n',
    ) in result.multipart_part_headers
    assert result.multipart["MULTIPART_STRICT_ERROR"] == 0
    # v3 sets 2 when a boundary matched after the first one (rules test "@eq 1")
    assert result.multipart["MULTIPART_UNMATCHED_BOUNDARY"] == 2


def test_multipart_multiline_field_loses_its_line_breaks() -> None:
    """v3 assigns the held-back CRLF to the value and then overwrites it with the next line."""
    result = multipart(field("f", b"line1\r\nline2\nline3") + end())
    assert result.args_post == (("f", "line1line2line3"),)


def test_multipart_empty_filename_is_a_field() -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename=""\r\n\r\nx\r\n' + end()
    result = multipart(body)
    assert result.files == () and result.args_post == (("f", "x"),)


def test_multipart_final_boundary_without_line_end() -> None:
    result = multipart(field("a", b"1") + b"--XyZ--")
    assert result.error is None and result.args_post == (("a", "1"),)


def test_multipart_fields_bypass_the_arguments_limit() -> None:
    body = b"".join(field(f"f{i}", b"v") for i in range(5)) + end()
    result = multipart(body, limits=BodyLimits(arguments_limit=2))
    assert len(result.args_post) == 5


def test_empty_multipart_body_is_no_error() -> None:
    result = multipart(b"")
    assert result.error is None and result.multipart["MULTIPART_STRICT_ERROR"] == 0


def test_multipart_without_content_type_does_nothing() -> None:
    result = process_body(field("a", b"1") + end(), None, "MULTIPART", LIMITS)
    assert result.args_post == () and result.error is None and result.multipart == {}


# --------------------------------------------------------------------------------------------
# MULTIPART: the Content-Type header


@pytest.mark.parametrize(
    ("content_type", "flags", "error"),
    [
        ("multipart/form-data; boundary=XyZ", set(), None),
        ('multipart/form-data; boundary="XyZ"', {"MULTIPART_BOUNDARY_QUOTED"}, None),
        ("multipart/form-data boundary=XyZ", {"MULTIPART_MISSING_SEMICOLON"}, None),
        ("multipart/form-data; boundary =XyZ", {"MULTIPART_BOUNDARY_WHITESPACE"}, None),
        # a leading space is part of the boundary (allowed), so "--XyZ" never matches
        (
            "multipart/form-data; boundary= XyZ",
            {"MULTIPART_BOUNDARY_WHITESPACE", "MULTIPART_DATA_BEFORE"},
            "No boundaries found",
        ),
        ("multipart/form-data; boundary=XyZ; charset=utf-8", set(), "characters"),
        ("multipart/form-data; boundary=X;yZ", set(), "characters"),
        ('multipart/form-data; boundary="XyZ', set(), "quote"),
        ("multipart/form-data; boundary=a; boundary=b", set(), "Multiple boundary"),
        ("multipart/form-data; BOUNDARY=XyZ", set(), "case sensitivity"),
        ("multipart/form-data", set(), "Boundary not found"),
        ("multipart/form-data;; boundary=XyZ", set(), "malformed"),
        ("multipart/form-data; x boundary=XyZ", set(), "malformed"),
        ("multipart/form-data; boundaryx=XyZ", set(), "parameter name"),
        ("multipart/form-data; boundary", set(), "malformed"),
        ("multipart/form-data; boundary=boundary", {"MULTIPART_DATA_BEFORE"}, "No boundaries"),
        ("multipart/form-data; boundary=" + "a" * 1100, set(), "length"),
    ],
)
def test_multipart_content_type(content_type: str, flags: set[str], error: str | None) -> None:
    result = multipart(field("a", b"1") + end(), content_type)
    assert set_flags(result) - {"MULTIPART_STRICT_ERROR", "MULTIPART_UNMATCHED_BOUNDARY"} == flags
    if error is None:
        assert result.error is None
        assert result.args_post == (("a", "1"),)
    else:
        assert result.error is not None and error in result.error
        assert result.error.startswith("Multipart parsing error: Multipart: ")
        assert result.args_post == ()
        assert result.multipart["MULTIPART_STRICT_ERROR"] == 1
    assert result.multipart["MULTIPART_STRICT_ERROR"] == int(bool(flags) or error is not None)


def test_multipart_content_type_not_multipart() -> None:
    result = process_body(field("a", b"1") + end(), "text/plain", "MULTIPART", LIMITS)
    assert result.error is not None and "Invalid MIME type" in result.error


# --------------------------------------------------------------------------------------------
# MULTIPART: the body's flags and errors


@pytest.mark.parametrize(
    ("body", "flags", "error"),
    [
        (field("a", b"1") + end(), set(), None),
        (b"preamble\r\n" + field("a", b"1") + end(), {"MULTIPART_DATA_BEFORE"}, None),
        (field("a", b"1") + end() + b"epilogue", {"MULTIPART_DATA_AFTER"}, None),
        (field("a", b"1").replace(b"\r\n", b"\n") + b"--XyZ--\n", {"MULTIPART_LF_LINE"}, None),
        (
            field("a", b"1") + field("b", b"2").replace(b"\r\n", b"\n") + end(),
            {"MULTIPART_LF_LINE", "MULTIPART_CRLF_LF_LINES"},
            None,
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data;\r\n name="a"\r\n\r\n1\r\n' + end(),
            {"MULTIPART_HEADER_FOLDING"},
            None,
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data;\r\n\x0b name="a"\r\n\r\n1\r\n' + end(),
            {"MULTIPART_HEADER_FOLDING", "MULTIPART_INVALID_HEADER_FOLDING"},
            None,
        ),
        (
            b"--XyZ\r\nContent-Disposition: form-data; name='a'\r\n\r\n1\r\n" + end(),
            {"MULTIPART_INVALID_QUOTING"},
            None,
        ),
        (
            # 3.0.9: a single quote inside a double-quoted value is fine
            b'--XyZ\r\nContent-Disposition: form-data; name="a\'b"\r\n\r\n1\r\n' + end(),
            set(),
            None,
        ),
        (
            b"--XyZ\r\nContent-Disposition: form-data; name=a'b\r\n\r\n1\r\n" + end(),
            {"MULTIPART_INVALID_QUOTING"},
            None,
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="te\'st.txt"\r\n\r\n1\r\n'
            + end(),
            set(),
            None,
        ),
        # "Part missing Content-Disposition", then the data line is read as a header
        (field("a", b"1") + b"--XyZ\r\n\r\nx\r\n" + end(), {"MULTIPART_INVALID_PART"}, "colon"),
        (field("a", b"x --XyZ y") + end(), {"MULTIPART_UNMATCHED_BOUNDARY"}, None),
        (field("a", b"1") + b"--XyY\r\n" + end(), {"MULTIPART_UNMATCHED_BOUNDARY"}, None),
        (field("a", b"1") + b"--XyZx\r\n" + end(), set(), "Final boundary missing"),
        (field("a", b"1"), set(), "Final boundary missing"),
        (b"no boundary at all\r\n", {"MULTIPART_DATA_BEFORE"}, "No boundaries found"),
        # a fatal error stops the parser, and complete() then reports the missing end
        (field("a", b"1") + b"--XyZ  \r\n" + end(), set(), "Final boundary missing"),
        (field("a", b"1") + b"-- XyZ\r\n" + end(), set(), "Final boundary missing"),
        (field("a", b"1") + end() + end(), {"MULTIPART_DATA_AFTER"}, None),
        (
            # a bad Content-Disposition marks the part invalid and stops the parser
            b'--XyZ\r\nContent-Disposition: form-data; name="a"; foo="b"\r\n\r\n1\r\n' + end(),
            {"MULTIPART_INVALID_PART"},
            "Final boundary missing",
        ),
        (
            b'--XyZ\r\nContent-Disposition: attachment; name="a"\r\n\r\n1\r\n' + end(),
            {"MULTIPART_INVALID_PART"},
            "Final boundary missing",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; filename="f"\r\n\r\n1\r\n' + end(),
            {"MULTIPART_INVALID_PART"},
            "Final boundary missing",
        ),
        (
            b'--XyZ\r\nX\x00Y: 1\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n' + end(),
            set(),
            None,  # the NUL line is refused with a message, then "a" parses and wins
        ),
        (
            b'--XyZ\r\nBad Name: 1\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
            + end(),
            set(),
            None,  # 3.0.9 takes any bytes in a part header name
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\x0eX\x7f: 1\r\n\r\n1\r\n'
            + end(),
            set(),
            None,
        ),
        (
            b"--XyZ\r\n" + b"X: " + b"v" * MULTIPART_BUF_SIZE + b"\r\n\r\n" + end(),
            set(),
            "Final boundary missing",  # after "Part header line over 4096 bytes long"
        ),
    ],
)
def test_multipart_flags(body: bytes, flags: set[str], error: str | None) -> None:
    result = multipart(body)
    got = set_flags(result) - {"MULTIPART_STRICT_ERROR"}
    if (
        "MULTIPART_UNMATCHED_BOUNDARY" not in flags
        and result.multipart["MULTIPART_UNMATCHED_BOUNDARY"] == 2
    ):
        got.discard("MULTIPART_UNMATCHED_BOUNDARY")
    assert got == flags
    if error is None:
        if b"\x00" not in body:
            assert result.error is None
    else:
        assert result.error is not None and error in result.error, result.error
    strict = any(result.multipart[name] for name in STRICT_PARTS)
    assert result.multipart["MULTIPART_STRICT_ERROR"] >= int(strict)


def test_multipart_nul_in_part_headers_is_reported() -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nX\x00: 1\r\n\r\n1\r\n' + end()
    result = multipart(body)
    assert result.error == "Multipart parsing error: Multipart: Nul byte in part headers."
    assert result.args_post == (("a", "1"),)


def test_multipart_header_errors_keep_parsing() -> None:
    """A header-level error records its message; parsing goes on (v3 ignores the return)."""
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: x\r\n'
        b"Content-Type: y\r\n\r\n1\r\n" + field("b", b"2") + end()
    )
    result = multipart(body)
    assert result.error is None  # duplicate part headers are dropped without a message
    assert result.args_post == (("a", "1"), ("b", "2"))
    assert ("a", "Content-Type: x\r\n") in result.multipart_part_headers
    assert ("a", "Content-Type: y\r\n") not in result.multipart_part_headers


def test_multipart_long_data_lines_are_split_at_the_buffer_size() -> None:
    value = b"v" * (3 * MULTIPART_BUF_SIZE + 17)
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="big.bin"\r\n\r\n'
        + value
        + b"\r\n"
        + end()
    )
    result = multipart(body)
    (big,) = result.files
    assert big.size == len(value) and big.content == value.decode()


def test_multipart_crs_922120_headers() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="flavors"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n"
        b"Pineapple. Pizza.\r\n" + end()
    )
    headers = multipart(body).multipart_part_headers
    assert ("flavors", "Content-Transfer-Encoding: 8bit\r\n") in headers
    assert ("flavors", "Content-Type: text/plain; charset=utf-7\r\n") in headers


# --------------------------------------------------------------------------------------------
# JSON


def json_body(text: bytes, limits: BodyLimits = LIMITS) -> BodyResult:
    return process_body(text, "application/json", "JSON", limits)


@pytest.mark.parametrize(
    ("text", "args"),
    [
        (b'{"a":"b"}', [("json.a", "b")]),
        (b'{"a":{"b":{"c":1}}}', [("json.a.b.c", "1")]),
        (
            b'{"a":[1,"x",true,false,null]}',
            [
                ("json.a.array_0", "1"),
                ("json.a.array_1", "x"),
                ("json.a.array_2", "true"),
                ("json.a.array_3", "false"),
                ("json.a.array_4", ""),
            ],
        ),
        (
            b'{"a":[[1,2],[3]]}',
            [
                ("json.a.array_0.array_0", "1"),
                ("json.a.array_0.array_1", "2"),
                ("json.a.array_1.array_0", "3"),
            ],
        ),
        (b'{"a":[{"b":1},{"c":2}]}', [("json.a.array_0.b", "1"), ("json.a.array_1.c", "2")]),
        (b"[1,2]", [("json.array_0", "1"), ("json.array_1", "2")]),
        (b'"top"', [("json", "top")]),
        (b"-1.5e+3", [("json", "-1.5e+3")]),
        (b'{"":1}', [("json.empty-key", "1")]),
        (b'{"a":{},"b":[],"c":2}', [("json.c", "2")]),
        (b' \t\n{ "a" : 1 }\r\n', [("json.a", "1")]),
        (b'{"a":"\\u00e9\\n\\"\\/"}', [("json.a", '\xc3\xa9\n"/')]),  # UTF-8 bytes
        (b'{"a":"\\ud83d\\ude00"}', [("json.a", "\xf0\x9f\x98\x80")]),
        (b'{"a":"\xc3\xa9"}', [("json.a", "\xc3\xa9")]),
        (b'{"a.b":1}', [("json.a.b", "1")]),
    ],
)
def test_json_argument_names(text: bytes, args: list[tuple[str, str]]) -> None:
    result = json_body(text)
    assert result.error is None
    assert list(result.args_post) == args


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"a":1', "premature EOF"),
        (b'{"a":1} x', "trailing garbage"),
        (b'{"a":1}{}', "trailing garbage"),
        (b"{a:1}", "invalid"),
        (b'{"a" 1}', "colon"),
        (b'{"a":1,}', "invalid object key"),
        (b"[1,]", "unallowed token"),
        (b"[1 2]", "expect ','"),
        (b"01", "trailing garbage"),
        (b'"\xff"', "UTF8"),
        (b'"\\x"', "'\\'"),
        (b'"a\x01b"', "invalid"),
        (b"  ", "premature EOF"),
        (b"// c\n{}", "invalid"),
        (b"nul", "invalid"),
    ],
)
def test_json_errors(text: bytes, message: str) -> None:
    result = json_body(text)
    assert result.error is not None and message in result.error, result.error
    assert result.error.startswith("JSON parsing error: ")


def test_json_arguments_before_an_error_are_kept() -> None:
    result = json_body(b'{"a":1,"b":2,"c"')
    assert result.args_post == (("json.a", "1"), ("json.b", "2")) and result.error


def test_json_empty_body_is_no_error() -> None:
    assert json_body(b"").error is None


def test_json_depth_limit() -> None:
    limits = BodyLimits(json_depth=3)
    assert json_body(b'{"a":{"b":[1]}}', limits).error is None
    deep = json_body(b'{"a":{"b":[[1]]}}', limits)
    assert deep.error == "JSON parsing error: JSON depth limit exceeded"
    assert not deep.exceeded


def test_json_arguments_limit() -> None:
    result = json_body(b"[1,2,3,4,5]", BodyLimits(arguments_limit=2))
    assert result.args_post == (("json.array_0", "1"), ("json.array_1", "2"))
    assert not result.exceeded and result.error is None


# --------------------------------------------------------------------------------------------
# XML


def xml_body(text: bytes) -> BodyResult:
    return process_body(text, "application/xml", "XML", LIMITS)


def test_xml_text_and_attributes() -> None:
    result = xml_body(
        b'<?xml version="1.0"?><a x="1"><b y="2" z="3">t1</b>t2<![CDATA[c<d]]><!--no-->'
        b"<?pi no?>&amp;&#233;</a>"
    )
    assert result.error is None
    assert result.xml_text == ("t1t2c<d&\xc3\xa9",)
    assert result.xml_attrs == ("1", "2", "3")


def test_xml_internal_entities_expand() -> None:
    result = xml_body(b'<!DOCTYPE a [<!ENTITY e "ent">]><a>&e;</a>')
    assert result.xml_text == ("ent",)


@pytest.mark.parametrize(
    ("text", "xml_text", "xml_attrs"),
    [
        (b"", (), ()),
        (b"not xml", (), ()),
        # v3 keeps libxml2's partial tree: what came before the error is still inspected
        (b'<a x="1">', ("",), ("1",)),
        (b'<a x="1">t<b y="2">u</c>', ("tu",), ("1", "2")),
        (b"<a/><b/>", ("",), ()),
        (b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>t&x;</a>', ("t",), ()),
    ],
)
def test_xml_errors(text: bytes, xml_text: tuple[str, ...], xml_attrs: tuple[str, ...]) -> None:
    result = xml_body(text)
    assert result.error == "XML parsing error: XML: Failed parsing document."
    assert (result.xml_text, result.xml_attrs) == (xml_text, xml_attrs)


def test_xml_latin1_declaration_becomes_utf8() -> None:
    result = xml_body(b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>')
    assert result.xml_text == ("\xc3\xa9",)


def test_multipart_part_headers_are_the_lines_as_received() -> None:
    """3.0.9 keeps each header line with its line end, keyed by name (checked in process)."""
    body = (
        b'--XyZ\r\nContent-Disposition: form-data;\r\n\tname="f"\r\n'
        b"Content-Type:text/plain\r\n\r\nv\r\n" + end()
    )
    assert multipart(body).multipart_part_headers == (
        ("f", "Content-Disposition: form-data;\r\n"),
        ("f", '\tname="f"\r\n'),
        ("f", "Content-Type:text/plain\r\n"),
    )


NO_FILES = "Request body excluding files is bigger than the maximum expected."


@pytest.mark.parametrize("action", ["Reject", "ProcessPartial"])
@pytest.mark.parametrize(
    ("content_type", "processor"),
    [
        ("application/x-www-form-urlencoded", None),
        ("application/json", "JSON"),
        ("text/xml", "XML"),
    ],
)
def test_no_files_limit_stops_the_parsers(
    action: str, content_type: str, processor: str | None
) -> None:
    """v3 (checked in process): a body over SecRequestBodyNoFilesLimit is not parsed and
    sets REQBODY_ERROR and INBOUND_DATA_ERROR, with either limit action."""
    limits = BodyLimits(no_files_limit=10, limit_action=action)
    body = {"JSON": b'{"a": "bcdefghi"}', "XML": b"<a>bcdefghij</a>"}.get(
        processor or "", b"a=bcdefghij"
    )
    over = process_body(body, content_type, processor, limits)
    assert (over.error, over.exceeded, over.args_post, over.xml_text) == (NO_FILES, True, (), ())
    at = process_body(body[:10], content_type, processor, limits)
    assert at.error != NO_FILES and not at.exceeded


def test_no_files_limit_counts_multipart_headers_and_field_data() -> None:
    """v3 counts each part's header lines and its non-file data (with the line ends held
    back inside it), never boundaries or file content; the parts are parsed all the same."""
    body = (
        field("a", b"v\r\nw")  # 42 + 2 header bytes, 4 data bytes
        + b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n'  # 56 + 2
        + b"z" * 500
        + b"\r\n"
        + end()
    )
    counted = 42 + 2 + 4 + 56 + 2
    at = multipart(body, limits=BodyLimits(no_files_limit=counted))
    assert at.error is None and not at.exceeded
    over = multipart(body, limits=BodyLimits(no_files_limit=counted - 1))
    assert (over.error, over.exceeded) == (NO_FILES, True)
    assert over.args_post == (("a", "vw"),) and len(over.files) == 1
