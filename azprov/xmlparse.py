"""Parsing XML that came off the network: the one place where untrusted XML is read.

Size capped before parsing, parsed with defusedxml (no DTDs, entity expansion or external
references), and every parser failure translated into azprov's ProtocolError naming the document.
"""

from __future__ import annotations

from azprov.errors import ProtocolError


def parse_untrusted_xml(body: bytes, what: str, max_bytes: int, root_tag: str):
    """The root element of ``body`` if it is at most ``max_bytes``, harmless, well-formed XML
    whose root is ``<root_tag>``; otherwise ProtocolError saying which of those it is not."""
    import defusedxml.ElementTree as DefusedET
    from defusedxml import DefusedXmlException
    from xml.etree.ElementTree import ParseError

    if len(body) > max_bytes:
        raise ProtocolError(f"{what} is {len(body)} bytes, over the {max_bytes}-byte limit")
    try:
        root = DefusedET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ProtocolError(f"{what} refused: hostile XML ({type(exc).__name__})") from None
    except (ParseError, ValueError, LookupError) as exc:  # LookupError: unknown encoding declared
        raise ProtocolError(f"{what} is not well-formed XML: {exc}") from None
    if root.tag != root_tag:
        raise ProtocolError(f"{what} root element is <{root.tag[:64]}>, expected <{root_tag}>")
    return root
