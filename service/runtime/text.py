"""The one rule for free text that can reach a mail header (a subject, a name, an address).

Refused, wherever such text enters (the API's input models, service.runtime.inputs) and again
where a job writes a header (jobs/mail/mailer.py):

- control characters (Unicode category Cc: CR, LF, NUL, U+0085...) and the Unicode line and
  paragraph separators (Zl, Zp): they end a header line, so they would let a client add
  headers or recipients (``str.splitlines`` splits on all of them);
- format characters (Cf: bidi overrides and isolates such as U+202E, zero-width spaces and
  joiners such as U+200B, the byte-order mark U+FEFF, the soft hyphen, tag characters): they
  render as nothing or reorder what is shown, so a subject or sender name can show one text
  in a mail client and hold another ("Invoice \\u202egnp.exe" shows as "Invoice exe.png");
- lone surrogates (Cs), which no mail encoding can carry;
- the letters and marks that render as nothing although they are not Cf (Unicode's
  Default_Ignorable_Code_Point outside Cf and variation selectors): the Hangul fillers and
  the combining grapheme joiner.

Letters of every script, emoji (with their variation selectors), right-to-left text and
ordinary spaces pass.
"""

from __future__ import annotations

import unicodedata

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
INVISIBLE_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
RULE = (
    "must not contain control characters such as CR or LF, line breaks, or invisible or"
    " format characters such as U+202E or U+200B"
)


def unsafe_character(value: str) -> str | None:
    """The first character :data:`RULE` refuses, as ``U+XXXX``; None when there is none."""
    for char in value:
        if char in INVISIBLE_LETTERS or unicodedata.category(char) in REFUSED_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def refusal(value: str) -> str | None:
    """Why ``value`` is refused (the rule, naming the character found), or None."""
    found = unsafe_character(value)
    return None if found is None else f"{RULE} (found {found})"
