"""Turn recognizer text into form values, and form values into text the TTS reads well.

Recognizers give lower-case words ("two nine zero two eight eight dash one three six
dee"), sometimes numerals ("290288-136d") and letter names. The dialogue tries each
n-best alternative in order and keeps the first that validates, so these parsers are
strict: a word they do not know makes the whole answer unrecognised (``None``), while
common fillers ("my code is", "uh", "euros a month") are skipped.

Number words are read by ``text_to_num`` (package text2num); this module only maps
digit and letter names and picks the fillers out.
"""

from __future__ import annotations

import re
from datetime import date

from text_to_num import alpha2digit

from voicebot.dialogue.validators import (
    FieldName,
    Invalid,
    Parsed,
    validate_household_size,
    validate_monthly_rent,
    validate_personal_id,
    validate_phone_number,
    validate_postal_code,
)

# --------------------------------------------------------------------------- vocabulary

# Words text_to_num reads as numbers inside a digit string ("twenty nine oh two").
_ZERO_WORDS = frozenset({"zero", "oh", "o", "nought", "naught"})
_NUMBER_WORDS = _ZERO_WORDS | frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
    "hundred".split()
)
_DIGIT_OF_WORD = {
    **{word: "0" for word in _ZERO_WORDS},
    **{word: str(i) for i, word in enumerate("zero one two three four five six seven eight nine".split()) if i},
}
_REPEAT_WORDS = {"double": 2, "triple": 3}

_LETTER_NAMES: dict[str, str] = {
    "ay": "A",
    "be": "B", "bee": "B",
    "see": "C", "sea": "C", "cee": "C",
    "dee": "D",
    "ee": "E",
    "ef": "F", "eff": "F",
    "gee": "G",
    "aitch": "H", "haitch": "H",
    "jay": "J",
    "kay": "K",
    "el": "L", "ell": "L",
    "em": "M",
    "en": "N",
    "pee": "P", "pea": "P",
    "cue": "Q", "queue": "Q",
    "are": "R", "ar": "R",
    "ess": "S", "es": "S",
    "tee": "T", "tea": "T",
    "you": "U", "yew": "U",
    "vee": "V",
    "doubleyou": "W",
    "ex": "X",
    "why": "Y", "wye": "Y",
    "zed": "Z", "zee": "Z",
}
_NATO: dict[str, str] = {
    word: word[0].upper()
    for word in (
        "alpha alfa bravo charlie delta echo foxtrot golf hotel india juliet juliett kilo lima "
        "mike november oscar papa quebec romeo sierra tango uniform victor whiskey whisky xray "
        "yankee zulu"
    ).split()
}
# Single letters, except "o" which callers mean as zero.
_LETTER_OF_WORD = {
    **{ch: ch.upper() for ch in "abcdefghijklmnpqrstuvwxyz"},
    **_LETTER_NAMES,
    **_NATO,
}
# "D as in David", "D for delta": the spelling aid after a letter is dropped.
_SPELLING_AIDS = (("as", "in"), ("for",), ("like",))
# Said at a position where a letter belongs, "eh" is the letter A; elsewhere a hesitation.
_HESITATION_OR_A = "eh"

_SIGN_OF_WORD = {"dash": "-", "minus": "-", "hyphen": "-", "-": "-", "plus": "+", "+": "+"}

_HESITATIONS = frozenset({"uh", "um", "umm", "eh", "er", "erm", "ah", "hmm", "mm", "well", "so", "okay", "ok"})
_CODE_FILLERS = _HESITATIONS | frozenset(
    "my code is it's its it and the personal identity id number social security that's "
    "letter capital then comma space".split()
)
_POSTAL_FILLERS = _HESITATIONS | frozenset(
    "my postal post postcode zip zipcode code number is it's its it and the that's area".split()
)
_RENT_FILLERS = _HESITATIONS | frozenset(
    "euros euro eur a per month monthly each every the my our rent rental is it's its it "
    "about around approximately roughly and i we pay paying costs cost in total that's "
    "just only oh".split()
)

_UNICODE_FOLD = str.maketrans(
    {"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
     "\u2018": "'", "\u2019": "'", "\u20ac": " euros "}
)


_COURTESY = re.compile(r"\b(thank you|thanks|please)\b")


def _tokens(text: str) -> list[str]:
    """Lower-case words, numerals and lone '-'/'+' signs; other punctuation dropped."""
    text = text.lower().translate(_UNICODE_FOLD).replace("x-ray", "xray")
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # twenty-nine, double-u
    text = _COURTESY.sub(" ", text)
    words = (token.strip("'") for token in re.findall(r"[a-z0-9']+|[-+]", text))
    return [word for word in words if word]


# --------------------------------------------------------------------------- digit and letter strings


def _number_run_digits(words: list[str]) -> str | None:
    """Digits of a run of number words, e.g. ["twenty", "nine", "oh", "two"] -> "2902"."""
    spoken = " ".join("zero" if word in _ZERO_WORDS else word for word in words)
    digits = []
    for token in alpha2digit(spoken, "en", threshold=0).split():
        if token.isdigit():
            digits.append(token)
        elif token != "and":
            return None
    return "".join(digits)


def _symbols(text: str, *, letters: bool, fillers: frozenset[str]) -> list[str] | None:
    """The characters a caller spelled out, in order; None on any word we do not know.

    Digits come out one per entry; with ``letters`` also upper-case letters and the
    century signs '-' and '+'.
    """
    words = _tokens(text)
    symbols: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        following = words[i + 1] if i + 1 < len(words) else ""
        if word in _REPEAT_WORDS:
            if letters and word == "double" and following in ("u", "you", "yew"):
                symbols.append("W")
                skipped = _spelling_aid_length(words, i + 2, "W")
                if skipped is None:
                    return None
                i += skipped
            elif following in _DIGIT_OF_WORD:
                symbols.extend(_DIGIT_OF_WORD[following] * _REPEAT_WORDS[word])
            elif len(following) == 1 and following.isdigit():
                symbols.extend(following * _REPEAT_WORDS[word])
            else:
                return None
            i += 2
            continue
        if word in _NUMBER_WORDS:
            end = i + 1
            while end < len(words) and (
                words[end] in _NUMBER_WORDS
                or (words[end] == "and" and end + 1 < len(words) and words[end + 1] in _NUMBER_WORDS)
            ):
                end += 1
            digits = _number_run_digits(words[i:end])
            if digits is None:
                return None
            symbols.extend(digits)
            i = end
            continue
        if word.isdigit():
            symbols.extend(word)
        elif any(ch.isdigit() for ch in word):  # "136d", "290288a"
            if not letters:
                return None
            symbols.extend(ch.upper() for ch in word)
        elif letters and word in _SIGN_OF_WORD:
            symbols.append(_SIGN_OF_WORD[word])
        elif letters and word == _HESITATION_OR_A and len(symbols) in (6, 10):
            symbols.append("A")
        elif letters and word in _LETTER_OF_WORD:
            letter = _LETTER_OF_WORD[word]
            symbols.append(letter)
            skipped = _spelling_aid_length(words, i + 1, letter)
            if skipped is None:
                return None
            i += skipped
        elif word in fillers:
            pass
        else:
            return None
        i += 1
    return symbols


def _spelling_aid_length(words: list[str], start: int, letter: str) -> int | None:
    """How many words of a spelling aid ("as in delta") follow a letter; None if it contradicts it."""
    for aid in _SPELLING_AIDS:
        end = start + len(aid)
        if tuple(words[start:end]) == aid and end < len(words):
            example = words[end]
            if example[0].upper() != letter:
                return None
            return len(aid) + 1
    return 0


# --------------------------------------------------------------------------- field parsers


def parse_personal_id(text: str, today: date) -> Parsed[str] | Invalid | None:
    """A Finnish personal identity code spoken character by character.

    "two nine zero two eight eight dash one three six dee" -> Parsed("290288-136D").
    """
    symbols = _symbols(text, letters=True, fillers=_CODE_FILLERS)
    if symbols is None or not any(symbol.isdigit() for symbol in symbols):
        return None
    code = "".join(symbols)
    if len(code) == 10 and code[:6].isdigit() and code[6:9].isdigit():
        return Invalid("century_sign", "I did not hear the sign after the birth date")
    return validate_personal_id(code, today)


def parse_postal_code(text: str) -> Parsed[str] | Invalid | None:
    """Five digits, spoken or as numerals: "oh oh five one oh" -> Parsed("00510")."""
    symbols = _symbols(text, letters=False, fillers=_POSTAL_FILLERS)
    if not symbols:
        return None
    return validate_postal_code("".join(symbols))


def _zero_words_between_numbers(text: str) -> str:
    """ "six oh five" -> "six zero five"; a lone "oh" stays an interjection."""
    words = text.split()
    numeric = [word in _NUMBER_WORDS - _ZERO_WORDS or word.isdigit() for word in words]
    return " ".join(
        "zero" if word in _ZERO_WORDS and any(numeric[max(i - 1, 0) : i + 2]) else word
        for i, word in enumerate(words)
    )


def parse_monthly_rent(text: str) -> Parsed[int] | Invalid | None:
    """Whole euros a month: "eight hundred and twenty euros" -> Parsed(820).

    Digits and short numbers in a row are read as one spoken figure, as callers say
    them: "eight two zero" -> 820, "eight twenty" -> 820, "twelve fifty" -> 1250.
    """
    text = text.lower().translate(_UNICODE_FOLD)
    text = re.sub(r"(?<=\d)[,. ](?=\d{3}\b)", "", text)  # 1,200 / 1.200 / 1 200
    text = re.sub(r"(?<=\d)[.,]0+\b", "", text)  # 820.00
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
    text = re.sub(r"[,;:!?]|\.(?!\d)", " ", text)  # "one thousand, two hundred"; keeps 820.50
    spelled = [word for word in _tokens(text) if word not in _RENT_FILLERS - _ZERO_WORDS]
    if len(spelled) > 1 and all(word in _DIGIT_OF_WORD for word in spelled):  # "one zero zero zero"
        return validate_monthly_rent(int("".join(_DIGIT_OF_WORD[word] for word in spelled)))
    text = alpha2digit(_zero_words_between_numbers(text), "en", threshold=0)
    words = _tokens(text)
    if re.search(r"\d[.,]\d", text) or "cents" in words or "cent" in words:
        return Invalid("not_whole_euros", "please give the rent in whole euros")
    numbers = [word for word in words if word.isdigit()]
    if any(word not in _RENT_FILLERS for word in words if not word.isdigit()):
        return None
    if not numbers:
        return None
    if len(numbers) > 1 and not all(len(number) <= 2 for number in numbers):
        return Invalid("not_a_number", "I heard more than one amount")
    return validate_monthly_rent(int("".join(numbers)))


_SELF_WORDS = frozenset({"me", "myself", "alone", "own"})
_MEMBER_NOUNS: dict[str, int | None] = {
    **{
        noun: 1
        for noun in (
            "wife husband partner spouse girlfriend boyfriend fiance fiancee son daughter child "
            "kid baby mother father mom mum dad brother sister friend roommate flatmate "
            "grandmother grandfather grandma grandpa grandson granddaughter grandchild parent "
            "cousin nephew niece aunt uncle someone somebody"
        ).split()
    },
    **{
        noun: None  # plural: only with a number in front
        for noun in (
            "children kids sons daughters babies parents brothers sisters friends roommates "
            "flatmates grandchildren grandparents cousins others"
        ).split()
    },
    "twins": 2,
}
# Groups the caller belongs to: "two adults and a child" is three people, not four.
_CALLER_GROUPS: dict[str, int | None] = {"adult": 1, "adults": None, "grownups": None}
_MEMBER_ADJECTIVES = frozenset({"little", "small", "young", "teenage", "grown", "other"})
_HOUSEHOLD_FILLERS = _HESITATIONS | frozenset(
    "and my our with plus the just only it's its it is there there's are we we're a an "
    "live lives living here that's that all i i'm am on in total of us people persons person "
    "household family members size think guess by altogether".split()
)


def parse_household_size(text: str) -> Parsed[int] | Invalid | None:
    """How many people live in the household, the caller included.

    "four people", "two of us", "just myself", "me and my wife" (2),
    "my wife and our two kids" (4). A plural without a number ("me and my kids")
    is not guessed.
    """
    spoken = " ".join(_tokens(text)).replace("grown ups", "grownups")
    words = _tokens(alpha2digit(spoken, "en", threshold=0))
    # "adult children": there "adult" describes the members, it is no group of its own
    words = [
        word
        for word, following in zip(words, [*words[1:], ""])
        if not (word == "adult" and following in _MEMBER_NOUNS)
    ]
    numbers = [i for i, word in enumerate(words) if word.isdigit()]
    groups = _MEMBER_NOUNS | _CALLER_GROUPS
    members = [i for i, word in enumerate(words) if word in groups]
    known = _HOUSEHOLD_FILLERS | _SELF_WORDS | groups.keys() | _MEMBER_ADJECTIVES
    if any(not word.isdigit() and word not in known for word in words):
        return None
    if members:
        size = 0 if any(words[i] in _CALLER_GROUPS for i in members) else 1  # the caller
        used_numbers: set[int] = set()
        for i in members:
            before = i - 1
            while before >= 0 and words[before] in _MEMBER_ADJECTIVES:
                before -= 1
            if before >= 0 and words[before].isdigit():
                size += int(words[before])
                used_numbers.add(before)
            elif (count := groups[words[i]]) is not None:
                size += count
            else:
                return None
        if used_numbers != set(numbers):
            return None
        return validate_household_size(size)
    if len(numbers) > 1:
        return Invalid("not_a_number", "I heard more than one number")
    if numbers:
        if any(word in _SELF_WORDS for word in words):
            return None  # "me and two": unclear whether the caller is counted
        return validate_household_size(int(words[numbers[0]]))
    if any(word in _SELF_WORDS for word in words):
        return validate_household_size(1)
    return None


# --------------------------------------------------------------------------- callbacks

_PHONE_FILLERS = _HESITATIONS | frozenset(
    "my the phone mobile cell telephone home work number is it's its it that's you can call me on at "
    "reach".split()
)
_PLUS_WORDS = frozenset({"plus", "+"})


def parse_phone_number(text: str) -> Parsed[str] | Invalid | None:
    """A phone number said digit by digit, maybe with a leading "plus" and in digit groups.

    "oh four oh, one two three, four five six seven" -> Parsed("0401234567");
    "plus three five eight four oh ..." -> Parsed("+358 40...") without spaces.
    """
    words = _tokens(text)
    plus = next((i for i, word in enumerate(words) if word in _PLUS_WORDS), None)
    if plus is not None:
        if any(word not in _PHONE_FILLERS for word in words[:plus]):
            return None
        words = words[plus + 1:]
    symbols = _symbols(" ".join(words), letters=False, fillers=_PHONE_FILLERS)
    if not symbols:
        return None
    return validate_phone_number(("+" if plus is not None else "") + "".join(symbols))


_CALLBACK_PHRASES = re.compile(
    r"\b(call ?back|call me( back| later)?|ring me( back)?|phone me( back)?|call (me )?again later)\b")


def parse_callback_request(text: str) -> bool:
    """Whether the caller asks to be called back ("call me back", "a callback please")."""
    return _CALLBACK_PHRASES.search(" ".join(_tokens(text))) is not None


# --------------------------------------------------------------------------- confirmation and corrections

_YES_INTERJECTIONS = frozenset({"yes", "yeah", "yep", "yup", "yea", "ya", "yah", "aye"})
_YES_WORDS = _YES_INTERJECTIONS | frozenset(
    "correct right sure affirmative exactly ok okay absolutely indeed true fine confirm "
    "confirmed alright definitely certainly perfect good great".split()
)
_NO_WORDS = frozenset(
    "no nope nah not wrong incorrect negative isn't nay false mistake don't doesn't "
    "aren't wasn't never change".split()
)
# Short answers that mean yes only when they are the whole answer ("it is", not "it is the rent").
_YES_ALONE = frozenset({("it", "is"), ("it's",), ("that's", "it"), ("of", "course"), ("i", "do")})
_SIGN_OFF = _HESITATIONS | {"oh", "bye", "goodbye"}
_UNSURE = re.compile(r"\b(not sure|don't know|do not know|dunno|maybe|perhaps)\b")


def parse_yes_no(text: str) -> bool | None:
    """True for a confirmation, False for a refusal, None when unclear or both."""
    words = _tokens(text)
    if not words or _UNSURE.search(" ".join(words)):
        return None
    said_no = any(word in _NO_WORDS for word in words)
    if said_no:
        return None if any(word in _YES_INTERJECTIONS for word in words) else False
    if any(word in _YES_WORDS for word in words):
        return True
    return True if tuple(word for word in words if word not in _SIGN_OFF) in _YES_ALONE else None


# Word sequences naming each field, matched on whole words.
_FIELD_PHRASES: dict[FieldName, tuple[str, ...]] = {
    "personal_id": (
        "id", "identity", "identification", "personal code", "personal number", "social security",
        "ssn", "hetu", "henkilotunnus", "birth", "birthday",
    ),
    "postal_code": ("postal", "post code", "postcode", "post number", "zip", "zipcode", "address"),
    "monthly_rent": ("rent", "rental", "amount", "euros", "cost", "costs", "payment", "price", "how much"),
    "household_size": (
        "household", "people", "persons", "number of people", "members", "family", "how many",
        "residents", "occupants", "live with", "living with",
    ),
}


def parse_field_choice(text: str) -> FieldName | None:
    """Which field the caller wants to change; None if none or several are named."""
    spoken = f" {' '.join(_tokens(text))} "
    named = {
        field
        for field, phrases in _FIELD_PHRASES.items()
        if any(f" {phrase} " in spoken for phrase in phrases)
    }
    return named.pop() if len(named) == 1 else None


# --------------------------------------------------------------------------- early end of turn


def is_complete(kind: str, partial_text: str) -> bool:
    """Whether a partial transcript already holds a whole answer, so the turn can end now.

    Kinds: "yes_no", "personal_id" (a valid code; the birth date is not compared with
    today here), "postal_code" (five digits).
    """
    if kind == "yes_no":
        return parse_yes_no(partial_text) is not None
    if kind == "personal_id":
        return isinstance(parse_personal_id(partial_text, today=date.max), Parsed)
    if kind == "postal_code":
        return isinstance(parse_postal_code(partial_text), Parsed)
    raise ValueError(f"unknown completeness test {kind!r}")


# --------------------------------------------------------------------------- read-back


def speak_digits(digits: str) -> str:
    """ "00180" -> "0 0 1 8 0", so the TTS reads digits, not a number."""
    return " ".join(digits)


def speak_phone_number(number: str) -> str:
    """ "+358401234567" -> "plus, 3 5 8, 4 0 1, 2 3 4, 5 6 7": digit groups the TTS pauses between.

    Groups of three, the last one taking a lone digit left over.
    """
    digits = number.lstrip("+")
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2:] = [groups[-2] + groups[-1]]
    spoken = ", ".join(speak_digits(g) for g in groups)
    return f"plus, {spoken}" if number.startswith("+") else spoken


def speak_code(code: str) -> str:
    """ "290288-136D" -> "2 9 0 2 8 8, dash, 1 3 6, D".

    The commas make espeak-ng pause and read a lone capital as its letter name
    ("A" as "ay", not the article).
    """
    sign = {"-": "dash", "+": "plus"}.get(code[6], code[6])
    return f"{speak_digits(code[:6])}, {sign}, {speak_digits(code[7:10])}, {code[10]}"


def speak_amount(euros: int) -> str:
    """ "820 euros": espeak-ng reads the numeral as words."""
    return f"{euros} euro" if euros == 1 else f"{euros} euros"
