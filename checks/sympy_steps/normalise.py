"""Normalising step text (LaTeX, unicode, prose operators) into the plain token language the parser reads."""

from __future__ import annotations

import re


# LaTeX whose meaning the parser is given: fractions, roots, binomials, mixed numbers, braced exponents.
_MIXED = re.compile(r"(?<![\d.^_])(\d+)\s*\\[dt]?frac\s*\{(\d+)\}\s*\{(\d+)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_SQRT = re.compile(r"\\sqrt\s*\{([^{}]*)\}")
_ROOT = re.compile(r"\\sqrt\s*\[\s*(\d+)\s*\]\s*\{([^{}]*)\}")
_SQRT_DIGIT = re.compile(r"\\sqrt\s*(\d)")  # TeX takes one token: \sqrt5 is sqrt(5), \sqrt52 is sqrt(5)*2
_BINOM = re.compile(r"\\[dt]?binom\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_BRACED_POWER = re.compile(r"\^\s*\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|mathbf|textbf|operatorname|mbox)\s*\{([^{}]*)\}")
# Separators: a new display block, an alignment row, a wide space or an environment boundary starts a new claim.
_SEPARATORS = [
    (re.compile(r"\\\\\s*(?=&\s*(?:=|\\approx))"), " "),  # "a &= b \\ &= c" continues one chain
    (re.compile(r"\\\\"), " ; "),
    (re.compile(r"&"), " "),
    (re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}"), " ; "),
    (re.compile(r"\\[\[\]()]|\$\$"), " ; "),
    (re.compile(r"\\q?quad(?![A-Za-z])"), " ; "),
    (re.compile(r",\\!"), ","),  # 729,\!000
]
_LATEX_SIMPLE = [
    (re.compile(r"\\(?:times|cdot|ast)(?![A-Za-z])"), " * "),
    (re.compile(r"\\div(?![A-Za-z])"), " / "),
    (re.compile(r"\\(?:approx|simeq|sim)(?![A-Za-z])"), " ≈ "),
    (re.compile(r"\\(?:neq|ne|leq|le|geq|ge|lt|gt|to|rightarrow|Rightarrow|implies|iff)(?![A-Za-z])"), " ; "),
    (re.compile(r"\\pi(?![A-Za-z])"), "π"),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\(?:left|right|big|Big|bigg|Bigg|displaystyle|textstyle|limits)(?![A-Za-z])"), ""),
    (re.compile(r"\\[,;:! ]"), " "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\boxed"), ""),
]
# Any other command (\gcd, \cos, \angle, \pm, \dots, \overline, ...) is notation the parser is not given the
# meaning of: "#" makes the sides next to it unknown instead of letting its arguments be read as arithmetic.
_OTHER_COMMAND = re.compile(r"\\[A-Za-z]+")
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,]|\.\d)")
_THOUSANDS_DEC = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(\.\d+)")
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?\b", re.IGNORECASE)
_DATE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b\d{1,2}-\d{1,2}-\d{4}\b")
_ORDINAL = re.compile(r"\b\d+(?:st|nd|rd|th)\b", re.IGNORECASE)
_RANGE = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)(?![\w.])")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|\(\d+\)|[a-zA-Z][.)]|\([a-zA-Z]\)|[-*•])\s+", re.MULTILINE)
_STEP_LABEL = re.compile(r"\b(?:step|thought|part|case|line|equation|eq\.?)\s*#?\d+\s*[:.)]?", re.IGNORECASE)
_APPROX_WORDS = re.compile(
    r"=\s*(?:about|approximately|approx\.?|roughly|around|nearly|almost|circa|~)\s*", re.IGNORECASE
)
_TILDE = re.compile(r"(?<![\w)])~\s*(?=[\d.(\-])")
_POW_STARS = re.compile(r"(?<=[\d)a-zA-Z])\s*\*\*\s*(?=[\d(\-])")
_WORD_OPS = [
    (re.compile(r"(?<=\d)\s+(?:times|multiplied\s+by)\s+(?=\d)", re.IGNORECASE), " * "),
    (re.compile(r"(?<=\d)\s+plus\s+(?=\d)", re.IGNORECASE), " + "),
    (re.compile(r"(?<=\d)\s+minus\s+(?=\d)", re.IGNORECASE), " - "),
    (re.compile(r"(?<=\d)\s+divided\s+by\s+(?=\d)", re.IGNORECASE), " / "),
    (re.compile(r"(?<=\d)\s*(?:x|X|×)\s*(?=\d)"), " * "),
    (re.compile(r"(?<=\d)\s*(?:%|percent)\s+of\s+(?=[\d(])", re.IGNORECASE), "% * "),
    (re.compile(r"(?<=\d)\s*percent\b", re.IGNORECASE), "%"),
]
_UNICODE = str.maketrans(
    {
        "×": "*",
        "·": "*",
        "⋅": "*",
        "∗": "*",
        "÷": "/",
        "−": "-",
        "–": " to ",  # en dash: almost always a range (3–5)
        "—": " ; ",
        "≃": "≈",
        "≅": "≈",
        "²": "^2",
        "³": "^3",
        "√": "sqrt",
        "$": " ",
        "€": " ",
        "£": " ",
        "¥": " ",
        "₹": " ",
        "\u00a0": " ",
        "\u2009": " ",
        "≠": ";",
        "±": "#",
        "≤": ";",
        "≥": ";",
        "<": ";",
        ">": ";",
        "→": ";",
        "⇒": ";",
        "{": "(",
        "}": ")",
    }
)


def normalise(text: str) -> str:
    """Rewrite ``text`` into numbers, variables, ``+-*/^!()``, ``=``, ``≈``, words and breaks (``;``, ``#``)."""
    s = text
    s = re.sub(r"==+>|=+>|<=+|>=|!=|:=", " ; ", s)
    s = s.replace("==", "=")
    for pat, rep in _SEPARATORS + _LATEX_SIMPLE:
        s = pat.sub(rep, s)
    s = _MIXED.sub(r"((\1)+(\2)/(\3))", s)
    for _ in range(8):  # nested groups, innermost first
        new = _BRACED_POWER.sub(r"^(\1)", s)
        new = _FRAC.sub(r"((\1)/(\2))", new)
        new = _ROOT.sub(r"((\2)^(1/(\1)))", new)
        new = _SQRT.sub(r"sqrt(\1)", new)
        new = _BINOM.sub(r"(((\1)!)/(((\2)!)*((\1)-(\2))!))", new)
        new = _TEXT.sub(r" \1 ", new)
        if new == s:
            break
        s = new
    s = _FRAC_SHORT.sub(r"((\1)/(\2))", s)
    s = _SQRT_DIGIT.sub(r"sqrt(\1)", s)
    s = _OTHER_COMMAND.sub(" # ", s)
    s = s.translate(_UNICODE)
    s = _POW_STARS.sub("^", s)
    s = s.replace("**", " ")  # markdown bold
    s = _STEP_LABEL.sub(" ; ", s)
    s = _ENUM.sub(" ", s)
    s = _APPROX_WORDS.sub(" ≈ ", s)
    s = _TILDE.sub(" ≈ ", s)
    s = _TIME.sub(" ZZTIME ", s)
    s = _DATE.sub(" ZZDATE ", s)
    s = _ORDINAL.sub(" ZZORD ", s)
    s = _THOUSANDS_DEC.sub(lambda m: m.group(1) + m.group(2).replace(",", "") + m.group(3), s)
    s = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), s)

    def _range(m: re.Match[str]) -> str:
        a, b = float(m.group(1)), float(m.group(2))
        return f"{m.group(1)} to {m.group(2)}" if a < b else m.group(0)

    s = _RANGE.sub(_range, s)
    for pat, rep in _WORD_OPS:
        s = pat.sub(rep, s)
    return s
