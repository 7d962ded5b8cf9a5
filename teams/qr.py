"""QR codes drawn here as inline SVG (segno), so that no secret they hold leaves our origin."""

import segno
from django.utils.safestring import SafeString, mark_safe


def qr_svg(data: str, *, title: str) -> SafeString:
    """Return an inline SVG QR code of `data`, sized by CSS, with an accessible title."""
    # The smallest version that holds the data (segno then raises the error correction as far as
    # that version allows): a screen is not a scuffed label, and fewer, larger modules keep a
    # long link (an OwnTracks configuration is ~350 characters) easy to scan off a laptop.
    code = segno.make(data, error="l", micro=False)
    # A white background of its own, so that the code scans on any page colour.
    svg = code.svg_inline(
        scale=1, border=4, omitsize=True, svgclass="qr", light="#fff", title=title
    )
    return mark_safe(svg)  # segno escapes the title; the rest is only path data
