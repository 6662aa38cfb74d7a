"""Hypothesis strategies and settings shared by the property tests of every module.

The property tests live with their module (``tests/test_goalstate.py``, ``test_health.py``,
``test_imds.py``, ``test_endpoint.py``, ``test_config.py``, ``test_errors.py`` and the step tests),
each parser with two kinds of properties:

* **robustness**: arbitrary input (random bytes, random text, structured documents built from
  hostile fragments, mutated realistic documents) gives a result or one of azprov's own
  ``AzprovError`` subclasses, never another exception;
* **round trips**: values generated from the valid space are encoded the way the real producer
  encodes them (WireServer XML, IMDS JSON, DHCP lease files, TOML) and must come back exactly.

Where a property found a bug, the property is split: the bug-free part runs normally, and the
part that reproduces the bug is a separate test marked ``xfail(strict=True, raises=...)`` with the
failing input pinned as an ``@example``, so CI stays green while the bug is visible, and turns red
(XPASS) the moment the bug is fixed so the marker gets removed.

Random, not derandomized: every run explores new inputs.  ``database=None`` keeps ``.hypothesis``
out of the tree.  ``AZPROV_FUZZ_SCALE=10 pytest -m property`` runs ten times as many examples per
property (a longer fuzzing session).

Strategies used by one module only live in that module's test file; this file holds the settings
(:func:`fuzz`) and the strategies more than one of them uses.
"""

from __future__ import annotations

import encodings.aliases
import functools
import inspect
import os
import string
from typing import List, Optional, Tuple
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, settings, strategies as st

from azprov.errors import ProtocolError
from azprov.goalstate import GoalState, parse_goal_state


SCALE = max(0.01, float(os.environ.get("AZPROV_FUZZ_SCALE", "1")))

# Big inputs and some filtering are the point here; names guarded across hypothesis versions.
_SUPPRESSED = [
    getattr(HealthCheck, name)
    for name in ("too_slow", "data_too_large", "filter_too_much", "large_base_example")
    if hasattr(HealthCheck, name)
]


def fuzz(max_examples: int):
    """Per-test settings: random (not derandomized), no example database, no deadline."""
    return settings(
        max_examples=max(1, int(max_examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=_SUPPRESSED,
    )


_CHARACTER_PARAMETERS = inspect.signature(st.characters).parameters


def characters(exclude_categories=(), **kwargs):
    """``st.characters`` across hypothesis versions (exclude_* replaced blacklist_* in 6.84)."""
    if "exclude_categories" in _CHARACTER_PARAMETERS:
        return st.characters(exclude_categories=exclude_categories, **kwargs)
    return st.characters(blacklist_categories=exclude_categories, **kwargs)


# Every code point, lone surrogates included.
ANY_CHAR = characters(exclude_categories=())

# Characters that trouble parsers: controls, separators, line breaks, non-characters, BOM, RTL.
NASTY_CHAR = st.sampled_from(
    list("\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1c\x1f\x7f\x80\x85\x9f\xa0\xad")
    + ["\u2028", "\u2029", "\u200b", "\u202e", "\ufeff", "\ufffe", "\uffff", "\ud800", "\udfff"]
    + ["\U0001f600", "\U0010ffff", "<", ">", "&", '"', "'", "|", "=", ";", "{", "}", "#", "\\"]
)

ANY_TEXT = st.text(alphabet=st.one_of(ANY_CHAR, NASTY_CHAR), max_size=80)
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def utf8(text: str) -> bytes:
    """Encode for a byte-level parser; lone surrogates become (invalid) UTF-8 sequences."""
    return text.encode("utf-8", "surrogatepass")


def is_xml_char(char: str) -> bool:
    """XML 1.0 ``Char`` production."""
    point = ord(char)
    return (
        point in (0x9, 0xA, 0xD)
        or 0x20 <= point <= 0xD7FF
        or 0xE000 <= point <= 0xFFFD
        or 0x10000 <= point <= 0x10FFFF
    )


@st.composite
def mutated(draw, body: bytes, fragments: List[bytes] = ()) -> bytes:
    """``body`` after 1-6 random byte-level edits (delete, insert, flip, duplicate, splice)."""
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["delete", "insert", "flip", "duplicate", "fragment"]))
        if action == "delete" and data:
            end = draw(st.integers(position, min(len(data), position + 16)))
            del data[position:end]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "duplicate" and data:
            end = draw(st.integers(position, min(len(data), position + 32)))
            data[position:position] = data[position:end]
        elif fragments:
            data[position:position] = draw(st.sampled_from(list(fragments)))
    return bytes(data)


GOAL_STATE_TAGS = [
    "GoalState", "Version", "Incarnation", "Machine", "ExpectedState", "Container",
    "ContainerId", "RoleInstanceList", "RoleInstance", "InstanceId", "State", "Configuration",
]

HEALTH_TAGS = [
    "Health", "GoalStateIncarnation", "Container", "ContainerId", "RoleInstanceList", "Role",
    "InstanceId", "State", "Details", "SubStatus", "Description",
]

XML_TAG = st.one_of(
    st.sampled_from(GOAL_STATE_TAGS + HEALTH_TAGS),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True),
    st.sampled_from(["x:Incarnation", "xsi:nil", "1bad", "a b", "", "{urn:x}GoalState"]),
)

# Fragments of hostile or awkward XML: entities (defined or not), character references to
# illegal characters, CDATA, comments, processing instructions, huge and odd numbers.
XML_FRAGMENTS = [
    "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#0;", "&#1;", "&#x9;", "&#13;", "&#xD;",
    "&#x10FFFF;", "&#x110000;", "&#xD800;", "&#65534;", "&undefined;", "&a;", "&lol9;", "&xxe;",
    "&%pe;", "<![CDATA[7]]>", "<![CDATA[<x>&amp;]]>", "]]>", "<!-- c -->", "<!-- -- -->",
    "<?pi data?>", "<?xml version='1.0'?>", "\r\n", "\r", "\t", " ", "\x00", "\x0c", "\ufeff",
    "9" * 19, "9" * 400, "9" * 5000, "-1", "+1", "0", "00000000000000000001", "1_000", "0x10",
    "1e3", "\uff11\uff12", "\u0663", "\u00b2", "1.0", " 7 ", "NaN", "c" * 257, "c\x7fd", "a b",
]

XML_ENCODINGS_HANDLED = [
    "utf-8", "UTF-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "windows-1252",
    "cp1252", "iso-8859-15", "utf-16", "UTF-16LE", "utf-32", "cp932", "shift_jis", "utf-7",
    "idna", "undefined", "koi8-r",
]

# Every codec name Python knows (text or not) and names it does not know at all.
XML_ENCODINGS_ALL = sorted(
    set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
) + ["bogus", "x-unknown", "", "utf-8 ", "base64", "hex", "rot13", "zlib", "uu", "bz2"]


def xml_text(fragments=XML_FRAGMENTS):
    """Character data: escaped random text (controls, surrogates...) or raw hostile fragments."""
    return st.one_of(
        ANY_TEXT.map(escape),
        st.sampled_from(fragments),
        st.text(alphabet=string.digits + " \t\r\n", max_size=30),
    )


def xml_attributes():
    name = st.sampled_from(["a", "xsi:type", "xmlns", "xmlns:xsi", "xmlns:x", "id", "b:c"])
    value = ANY_TEXT.map(lambda text: escape(text, {'"': "&quot;"}))
    return st.dictionaries(name, value, max_size=2).map(
        lambda attrs: "".join(f' {key}="{value}"' for key, value in attrs.items())
    )


def _element(tag: str, attrs: str, children: List[str], empty_tag: bool = False) -> str:
    if not children and empty_tag:
        return f"<{tag}{attrs}/>"
    return f"<{tag}{attrs}>{''.join(children)}</{tag}>"


def xml_trees(root_tags: List[str], fragments=XML_FRAGMENTS, max_leaves: int = 40):
    """Random element trees whose root is usually one of ``root_tags``."""
    node = st.recursive(
        xml_text(fragments),
        lambda children: st.builds(
            _element, XML_TAG, xml_attributes(), st.lists(children, max_size=5), st.booleans()
        ),
        max_leaves=max_leaves,
    )
    root_tag = st.one_of(st.sampled_from(root_tags), XML_TAG)
    return st.builds(_element, root_tag, xml_attributes(), st.lists(node, max_size=6))


DOCTYPES = [
    "",
    "<!DOCTYPE GoalState>",
    '<!DOCTYPE GoalState [<!ENTITY a "7">]>',
    '<!DOCTYPE Health [<!ENTITY a "7">]>',
    '<!DOCTYPE GoalState [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;"><!ENTITY lol9 "&lol2;&lol2;&lol2;">]>',
    '<!DOCTYPE GoalState [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE GoalState SYSTEM "http://127.0.0.1:1/goalstate.dtd">',
    '<!DOCTYPE GoalState [<!ENTITY % pe SYSTEM "http://127.0.0.1:1/x"> %pe;]>',
    '<!DOCTYPE GoalState [<!ELEMENT GoalState ANY><!ATTLIST GoalState a CDATA "d">]>',
    "<!DOCTYPE",
]


@st.composite
def xml_documents(draw, body, encodings_=XML_ENCODINGS_HANDLED) -> bytes:
    """A prologue (BOM, XML declaration with an encoding, DOCTYPE, comments) + ``body`` + junk."""
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["", "\ufeff", " ", "\n", "<!-- before -->"])))
        if draw(st.booleans()):
            encoding = draw(st.sampled_from(encodings_))
            parts.append(f'<?xml version="1.0" encoding="{encoding}"?>')
        else:
            parts.append(draw(st.sampled_from(['<?xml version="1.0"?>', "<?xml version='1.1'?>",
                                               '<?xml version="2.0"?>', "<?xml ?>"])))
    parts.append(draw(st.sampled_from(DOCTYPES)))
    parts.append(draw(st.sampled_from(["", "\n", "<?pi x?>", "<!-- x -->"])))
    parts.append(draw(body))
    parts.append(draw(st.sampled_from(["", "\n", "<!-- after -->", "<GoalState/>", "junk", "\x00"])))
    return utf8("".join(parts))


def check_goal_state(body: bytes) -> Optional[GoalState]:
    """The robustness oracle: a plausible GoalState, or ProtocolError; nothing else."""
    try:
        goal_state = parse_goal_state(body)
    except ProtocolError:
        return None
    assert isinstance(goal_state, GoalState)
    assert isinstance(goal_state.incarnation, int) and 0 <= goal_state.incarnation < 10**18
    for value in (goal_state.container_id, goal_state.instance_id):
        assert 1 <= len(value) <= 256 and all(char in PRINTABLE_ASCII for char in value), value
    return goal_state


# Ids of 1-256 printable ASCII characters; long ones by repetition (cheap to generate).
ID_TEXT = st.one_of(
    st.text(alphabet=PRINTABLE_ASCII, min_size=1, max_size=40),
    st.tuples(st.text(alphabet=PRINTABLE_ASCII, min_size=1, max_size=16), st.integers(1, 16)).map(
        lambda pair: pair[0] * pair[1]
    ),
    st.just("x" * 256),
)

XML_SPACE = st.text(alphabet=" \t\r\n", max_size=4)

UNKNOWN_TAG = st.one_of(
    st.sampled_from(["Version", "Machine", "ExpectedState", "State", "Configuration", "LBProbePorts",
                     "Foo", "x"]),
    st.from_regex(r"[A-Z][A-Za-z]{0,10}", fullmatch=True),
)


@functools.lru_cache(maxsize=None)  # building strategies is costly: once per level
def unknown_elements(exclude: Tuple[str, ...]):
    """Unknown sibling elements (never named like the required element at that level)."""
    leaf = st.builds(
        lambda tag, text: f"<{tag}>{escape(text)}</{tag}>",
        UNKNOWN_TAG.filter(lambda tag: tag not in exclude),
        st.text(alphabet=string.printable.replace("\x0b", "").replace("\x0c", ""), max_size=10),
    )
    nested = st.builds(
        lambda tag, inner: f"<{tag}>{inner}</{tag}>",
        UNKNOWN_TAG.filter(lambda tag: tag not in exclude),
        # Known names nested one level deeper are not on the paths the parser reads.
        st.sampled_from(["<Incarnation>99</Incarnation>", "<ContainerId>other</ContainerId>",
                         "<InstanceId>other</InstanceId>", "<RoleInstance/>", ""]),
    )
    return st.lists(st.one_of(leaf, nested, st.sampled_from(["<!-- c -->", "<?pi x?>"])),
                    max_size=3)


def id_markup(draw, value: str) -> str:
    """An id as character data: escaped, or partly character references, or CDATA."""
    style = draw(st.sampled_from(["escape", "charref", "cdata"]))
    if style == "cdata" and "]]>" not in value:
        return f"<![CDATA[{value}]]>"
    if style == "charref":
        chooser = draw(st.randoms(use_true_random=False))
        return "".join(f"&#{ord(c)};" if chooser.random() < 0.5 else escape(c) for c in value)
    return escape(value, {'"': "&quot;", "'": "&apos;"} if draw(st.booleans()) else {})


@st.composite
def valid_goal_states(draw) -> Tuple[GoalState, bytes]:
    incarnation = draw(st.one_of(st.integers(0, 10), st.integers(0, 10**18 - 1)))
    digits = str(incarnation)
    digits = "0" * draw(st.integers(0, 18 - len(digits))) + digits
    container_id, instance_id = draw(ID_TEXT), draw(ID_TEXT)

    def shuffled(required: List[str], exclude: Tuple[str, ...]) -> str:
        items = required + draw(unknown_elements(exclude))
        return "".join(draw(st.permutations(items))) if len(items) > 1 else "".join(items)

    space = lambda: draw(XML_SPACE)  # noqa: E731
    instance = f"<InstanceId>{space()}{id_markup(draw, instance_id)}{space()}</InstanceId>"
    role_instance = f"<RoleInstance>{shuffled([instance], ('InstanceId',))}</RoleInstance>"
    role_list = f"<RoleInstanceList>{shuffled([role_instance], ('RoleInstance',))}</RoleInstanceList>"
    container_id_element = (
        f"<ContainerId>{space()}{id_markup(draw, container_id)}{space()}</ContainerId>"
    )
    container_children = shuffled([container_id_element, role_list], ("ContainerId", "RoleInstanceList"))
    container = f"<Container>{container_children}</Container>"
    incarnation_element = f"<Incarnation>{space()}{digits}{space()}</Incarnation>"
    attrs = draw(st.sampled_from([
        "", ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xsi:noNamespaceSchemaLocation="goalstate10.xsd"',
    ]))
    root = (
        f"<GoalState{attrs}>{space()}"
        f"{shuffled([incarnation_element, container], ('Incarnation', 'Container'))}{space()}"
        "</GoalState>"
    )
    declaration = draw(st.sampled_from(['', '<?xml version="1.0" encoding="utf-8"?>\n',
                                        "<?xml version='1.0'?>"]))
    return GoalState(incarnation, container_id, instance_id), (declaration + root).encode()


@st.composite
def near_goal_states(draw) -> bytes:
    """Goal-state-shaped documents with hostile values and elements randomly missing."""

    def maybe(element: str) -> str:
        return "" if draw(st.integers(0, 9)) == 0 else element

    value = lambda: draw(st.one_of(xml_text(), ID_TEXT.map(escape)))  # noqa: E731
    instance = maybe(f"<InstanceId>{value()}</InstanceId>")
    role = maybe(f"<RoleInstance>{instance}</RoleInstance>")
    roles = maybe(f"<RoleInstanceList>{role}</RoleInstanceList>")
    container = maybe(f"<Container>{maybe(f'<ContainerId>{value()}</ContainerId>')}{roles}</Container>")
    incarnation = maybe(f"<Incarnation>{value()}</Incarnation>")
    root = draw(st.sampled_from(["GoalState"] * 8 + ["goalstate", "Health", "x:GoalState"]))
    return f"<{root}>{incarnation}{container}</{root}>"


KEY_TYPES = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "sk-ssh-ed25519@openssh.com"]


# --- fabric addresses (azprov.address; the configuration's [wireserver]/[imds] address) ----------

HOST_PORT_HOSTS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,30}[A-Za-z0-9])?", fullmatch=True),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.sampled_from(["localhost", "168.63.129.16", "169.254.169.254", "[::1]", "wireserver.local"]),
)


@st.composite
def addresses(draw) -> str:
    host = draw(HOST_PORT_HOSTS)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    text = host if port is None else f"{host}:{str(port).zfill(draw(st.integers(0, 5)))}"
    if draw(st.booleans()):
        text = draw(st.sampled_from(["http://", "HTTP://", "Http://"])) + text
        if draw(st.booleans()):
            text += "/"
    return text
