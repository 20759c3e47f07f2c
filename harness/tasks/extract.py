"""Answer extractors: the part of a completion that is the answer, and :func:`exact_match`
over it.

Each extractor is one small class named in :data:`EXTRACTORS`; called on a completion it
returns the extracted answer (a string) or None when it finds none. No extractor raises
on any text. A prompt set names one (``extractor:`` in the config); the rows then carry
it, :func:`row_answer` fills their ``extracted`` column, and the ``exact_match`` metric
compares that answer with the references by :func:`exact_match` under
:data:`ANSWER_NORMALISATION` (lm-eval's GSM8K settings).

Adding an extractor: 1. subclass :class:`Extractor` (or :class:`RegexExtractor`) with a
``description`` and ``__call__``; 2. register it with ``@EXTRACTORS.register("name")``,
or name it as ``my_pkg.module:Class`` in a config.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, ClassVar, Iterable, Sequence

from harness.errors import RegistryError
from harness.registry import Registry


class Extractor:
    """The answer in a completion: ``extractor(text) -> str | None``. Never raises."""

    #: one line for ``deceval`` listings and the README
    description: ClassVar[str] = ""

    def __call__(self, text: str) -> str | None:
        raise NotImplementedError


def _check_extractor(name: str, obj: Any) -> None:
    """A ``module:Class`` extractor named in a config must be an :class:`Extractor` subclass."""
    if not (isinstance(obj, type) and issubclass(obj, Extractor)):
        raise RegistryError(f"answer extractor {name!r} names {obj!r}, not a harness.tasks.extract.Extractor "
                            f"subclass; subclass Extractor and give its __call__(text) -> str | None")


EXTRACTORS: Registry = Registry("answer extractor", validate=_check_extractor)


class RegexExtractor(Extractor):
    """lm-eval's ``regex`` filter: all matches of ``pattern``, the one at ``group_select``
    (0: the first, -1: the last); of a match with several groups the first non-empty one;
    stripped. None where nothing matches."""

    pattern: ClassVar[re.Pattern[str]]
    group_select: ClassVar[int] = 0

    def __call__(self, text: str) -> str | None:
        found = self.pattern.findall(text)
        if not found:
            return None
        match = found[self.group_select]
        if isinstance(match, tuple):
            match = next((m for m in match if m), None)
            if match is None:
                return None
        return match.strip()


@EXTRACTORS.register("gsm8k_strict")
class GSM8KStrict(RegexExtractor):
    description = "lm-eval GSM8K strict-match: the number after the first '#### '"
    pattern = re.compile(r"#### (\-?[0-9\.\,]+)")


@EXTRACTORS.register("gsm8k_flexible")
class GSM8KFlexible(RegexExtractor):
    description = "lm-eval GSM8K flexible-extract: the last number anywhere (may keep '$', ',' and a final '.')"
    pattern = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
    group_select = -1


@EXTRACTORS.register("last_number")
class LastNumber(Extractor):
    """The last number written like ``-1,234.5``, ``42`` or ``.5``, without its thousands
    separators."""

    description = "the last number in the completion, thousands separators removed ('1,234.5' -> '1234.5')"
    _number = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)|(?<![\w.])-?\.\d+(?!\w)")

    def __call__(self, text: str) -> str | None:
        found = self._number.findall(text)
        return found[-1].replace(",", "") if found else None


#: What :class:`AnswerIs` strips from both ends of the answer it found (and "." etc. from its end).
_WRAPPERS = " \t*\"'`"
_TRAILING = ".,;:!?"


@EXTRACTORS.register("answer_is")
class AnswerIs(Extractor):
    """The text after the first "The answer is" / "answer:" (any case) to the end of its
    sentence (a '.', '!' or '?' before white space) or line, without trailing punctuation,
    quotes or ``**`` emphasis."""

    description = ("the rest of the sentence after the first 'the answer is' or 'answer:' (any case), trailing "
                   "punctuation stripped")
    _lead = re.compile(r"\b(?:the\s+(?:final\s+|correct\s+)?answer\s+is|answer\s*:)[ \t]*(?::[ \t]*)?([^\n]*)",
                       re.IGNORECASE)
    _sentence_end = re.compile(r"[.!?](?=\s)")

    def __call__(self, text: str) -> str | None:
        m = self._lead.search(text)
        if m is None:
            return None
        answer = self._sentence_end.split(m.group(1), maxsplit=1)[0]
        previous = None
        while answer != previous:  # '**42**.' -> '42'
            previous = answer
            answer = answer.strip(_WRAPPERS).rstrip(_TRAILING)
        return answer or None


@EXTRACTORS.register("choice_letter")
class ChoiceLetter(Extractor):
    """The chosen option A-E: after "answer is" / "answer:" first (any case), else the
    first "(B)", else the first standalone capital A-E. A capital "A" followed by a
    lower-case word ("A good answer is C") is the article and is skipped."""

    description = "the option letter A-E: after 'answer:'/'answer is', else the first '(B)', else the first standalone A-E"
    _after_answer = re.compile(r"\banswer\s*(?:is|:)\s*(?:option\s+)?\(?([A-Ea-e])\b\)?", re.IGNORECASE)
    _parenthesised = re.compile(r"\(([A-E])\)")
    _standalone = re.compile(r"(?<![A-Za-z0-9'])[A-E](?![A-Za-z0-9'])")
    _article = re.compile(r"\s+[a-z]")

    def __call__(self, text: str) -> str | None:
        for rx in (self._after_answer, self._parenthesised):
            m = rx.search(text)
            if m:
                return m.group(1).upper()
        for m in self._standalone.finditer(text):
            if m.group(0) == "A" and self._article.match(text, m.end()):
                continue  # "A good answer": the article
            return m.group(0)
        return None


@EXTRACTORS.register("yes_no")
class YesNo(Extractor):
    description = "the first word 'yes' or 'no' (any case), as 'yes' or 'no'"
    _word = re.compile(r"\b(yes|no)\b", re.IGNORECASE)

    def __call__(self, text: str) -> str | None:
        m = self._word.search(text)
        return m.group(1).lower() if m else None


#: The extractor value of an lm-eval task's prompts and rows starts so (harness.tasks.lm_eval_bridge).
LM_EVAL_MARKER = "lm_eval:"

_INSTANCES: dict[str, Extractor] = {}


def get_extractor(name: str) -> Extractor:
    """The extractor registered as ``name`` (or given as ``module:Class``), ready to call."""
    if name not in _INSTANCES:
        _INSTANCES[name] = EXTRACTORS.get(name)()
    return _INSTANCES[name]


def describe_extractors() -> list[dict[str, str]]:
    """One dict (name, description) per registered extractor, for docs and the CLI."""
    return [{"name": n, "description": EXTRACTORS.get(n).description} for n in EXTRACTORS.names()]


# ---- exact match ----------------------------------------------------------------------------

#: lm-eval's gsm8k.yaml settings of its exact_match metric: commas, dollar signs, a GSM8K
#: solution up to its '#### ' and a final '.' are removed from both sides, case is ignored.
GSM8K_REGEXES_TO_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
ANSWER_NORMALISATION: dict[str, Any] = {"ignore_case": True, "ignore_punctuation": False,
                                        "regexes_to_ignore": GSM8K_REGEXES_TO_IGNORE}

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NO_DIGITS = str.maketrans("", "", string.digits)


def _normalise(text: str, regexes: Sequence[str], ignore_case: bool, ignore_punctuation: bool,
               ignore_numbers: bool) -> str:
    for rx in regexes:
        text = re.sub(rx, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_NO_PUNCTUATION)
    if ignore_numbers:
        text = text.translate(_NO_DIGITS)
    return text


def exact_match(pred: str | None, refs: str | Iterable[str], *, ignore_case: bool = False,
                ignore_punctuation: bool = False, ignore_numbers: bool = False,
                regexes_to_ignore: Sequence[str] = ()) -> float:
    """1.0 when ``pred`` equals one of ``refs`` after lm-eval's ``exact_match`` steps, else
    0.0 (also for a None ``pred``). As in lm-eval's ``exact_match_hf_evaluate``: each regex
    is removed from both sides in turn, then case is folded, then ``string.punctuation``
    and (``ignore_numbers``) digits are deleted; the results are compared as they are, with
    no stripping of white space. Several references score 1.0 when any matches (lm-eval's
    rule for a list of gold answers)."""
    if pred is None:
        return 0.0
    refs = [refs] if isinstance(refs, str) else list(refs)
    opts = (tuple(regexes_to_ignore), ignore_case, ignore_punctuation, ignore_numbers)
    got = _normalise(pred, *opts)
    return float(any(got == _normalise(r, *opts) for r in refs))


# ---- rows -----------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    """None, a float NaN (pandas' null string) or an empty string."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def row_answer(row: dict[str, Any]) -> str | None:
    """The answer its prompt set's extractor finds in a row's completion; None when the
    row has no extractor or no completion, or the extractor finds nothing, and for an
    lm-eval task's row (extractor ``lm_eval:<task>``: the task's own filters find its answer,
    :mod:`harness.tasks.lm_eval_bridge`)."""
    name, completion = row.get("extractor"), row.get("completion")
    if _missing(name) or not isinstance(completion, str) or str(name).startswith(LM_EVAL_MARKER):
        return None
    return get_extractor(str(name))(completion)
