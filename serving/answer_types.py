"""Expected answer types: what kind of value a question asks for, and whether a text holds one.

The classic question-answering filter (TREC-style "expected answer type"): "How much does the
TW-40 weigh?" asks for a weight, so a sentence about the TW-40 that holds no weight does not
answer it, however many of the question's words it shares. The lexical grounding check and the
gate use it to tell a near miss ("the passage is about the right thing but does not say") from
an answer, which word overlap alone cannot: on `data/eval/qa.jsonl` every unanswerable English
question had a best sentence covering half its words. Rules, English and Chinese; a question of
no recognised type (what is X, why, how do I) is not filtered.

A value counts only when the question does not already hold it ("How many days can a Skerrow
S3 keep running" is not answered by the "3" of "S3").
"""

from __future__ import annotations

import re
from functools import lru_cache

MONEY, WEIGHT, NUMBER, CODE, PERSON, TIME = "money", "weight", "number", "code", "person", "time"
SPEED, FLOOR, TEMPERATURE, VERSION = "speed", "floor", "temperature", "version"

_EN_MONEY = re.compile(r"\b(?:cost|costs|price|priced|fee|fees|charged?|charges|rent|"
                       r"allowance|subsidy|bonus|reimburs\w*)\b", re.I)
_EN_WEIGHT = re.compile(r"\b(?:weigh|weighs|weight|heavy)\b", re.I)
# Asks for a count, a duration, a date or a size, whatever else it names ("How many weeks at full
# pay", "On which day of the month are salaries paid?"): checked before the other kinds.
_EN_QUANTITY = re.compile(
    r"\bhow (?:many|long|often|far|fast|quickly|soon|large|big|old|high|low|deep|wide|tall)\b|"
    r"\b(?:what|which) (?:date|day|time|year|weekday)\b|\bday of the (?:month|week)\b|"
    r"\b(?:minimum|maximum) (?:length|number|size|age)\b", re.I)
_ZH_QUANTITY = re.compile(r"几|幾|多长|多長|多久|多快|多远|多遠|哪天|哪一天|哪年|多少天|多少个|多少個|"
                          r"多少人|多少小时|多少小時|多少分钟|多少分鐘|多少年|多少次|多少学时|多少學時")
# Quantities with a unit of their own: the number must come with it ("12,000 平方米" is not how
# fast a forklift may drive). (kind, question cue, value) in the order they are tried.
_UNITS = (
    ("speed", re.compile(r"\bhow fast\b|\b(?:what|maximum|top) speed\b|\bspeed limit\b|多快|时速|時速|"
                         r"速度是多少|限速", re.I),
     re.compile(r"\d\s?(?:km/h|kph|mph|m/s|knots?|公里/小时|公里/小時|千米/小时|公里每小时|公里每小時|"
                r"千米每小时|米/秒|米每秒)", re.I)),
    ("floor", re.compile(r"\bwhich floor\b|\bwhat floor\b|几楼|幾樓|哪一层|哪一層|哪层|哪層|几层|幾層",
                         re.I),
     re.compile(r"\d+\s?(?:樓|楼|层|層|f\b)|\b(?:ground|first|second|third|\d+(?:st|nd|rd|th)) floor\b|"
                r"[一二三四五六七八九十]+(?:樓|楼|层|層)", re.I)),
    ("size", re.compile(r"^\s*how much (?:ram|memory|disk|disk space|space|storage|swap)\b|"
                        r"\bhow (?:big|large) (?:is|are|must|should) (?:the |a |an )?(?:ram|memory|"
                        r"disk|partition|swap|file|image|download)|内存|磁盘空间|硬盘空间|多大的?(?:内存|磁盘|分区)",
                        re.I),
     re.compile(r"\d\s?(?:[kmgtp]i?b\b|bytes?\b|kilobytes?|megabytes?|gigabytes?|terabytes?|"
                r"字节|兆|千兆)", re.I)),
    ("temperature", re.compile(r"\bwhat temperature\b|\b(?:below|above|under|over|at) (?:what|which) "
                               r"(?:\w+ )?temperature\b|\bhow (?:warm|cold|hot)\b|\btemperature\b.*\b(?:"
                               r"above|below|exceed|maximum|minimum)\b|温度|溫度", re.I),
     re.compile(r"\d\s?(?:°|℃|degrees?\b|度)|(?:零下|摄氏|攝氏)\s?\d", re.I)),
)
# Asks for a version: "What is the final firmware version …", "Which Debian version", 第几版.
# A version is a number standing alone or dotted (5.6.3, Debian 13), not the digits of a code
# (the "09" of the bulletin SB-FX7-09).
_VERSION_CUE = re.compile(r"^\s*(?:what|which)\b(?:\s+is)?(?:\s+the)?(?:\s+[\w-]+){0,2}\s+version\b|"
                          r"哪个版本|哪個版本|什么版本|什麼版本|第几版|第幾版", re.I)
_VERSION_VALUE = re.compile(r"(?<![\w-])v?\d+(?:\.\d+)*(?![\w-])", re.I)
# Asks for a time of day.
_TIME_OF_DAY = re.compile(r"\b(?:at )?what time\b|\bwhat hour\b|几点|幾點|什么时间|什麼時間", re.I)
_TIME_VALUE = re.compile(r"\d{1,2}\s?[:：.]\s?\d{2}|\d{1,2}\s?(?:点|點|时|時)|上午|下午|早上|晚上|中午|凌晨|"
                         r"\d\s?(?:a\.?m\.?|p\.?m\.?)|\bo'clock\b|\bnoon\b|\bmidnight\b", re.I)
# Asks "why" or what something means: no value is asked for.
_NO_VALUE = re.compile(r"^\s*why\b|\bstand for\b|\bmean\??\s*$|为什么|為什麼|什么意思|什麼意思|代表什么|"
                       r"代表什麼", re.I)
_EN_NUMBER = re.compile(
    r"\bhow (?:many|long|often|far|fast|quickly|soon|large|big|old|high|low|deep|wide|much|"
    r"tall|warm|cold|hot)\b|\bwhat (?:date|time|year|day of the month|percentage|share|"
    r"temperature|voltage|range|speed|size|length|diameter|distance|depth|height|capacity|"
    r"rate|interval|version|value|amount|number of)\b|\b(?:on|by|until|from) (?:what|which) "
    r"(?:date|day|time|year)\b|\bat what (?:time|age|temperature|speed|depth)\b|\bwhich "
    r"(?:year|date|version|release)\b|\b(?:up to|below|above|over|under) (?:what|which|how)\b|"
    r"\b(?:minimum|maximum|longest|shortest|largest|smallest|highest|lowest|fastest)\b", re.I)
_EN_CODE = re.compile(r"\b(?:password|passcode|pin|serial|code|prefix|part number|model number|"
                      r"phone|telephone|extension|e-?mail|address|url|ip|id|web ?site|"
                      r"web ?page|home ?page)\b", re.I)
_EN_PERSON = re.compile(r"^\s*(?:who|whom)\b|\bwhich (?:\w+ )?(?:team|person|people|employee|engineer|"
                        r"manager|supplier|manufacturer|company|customer|department)\b", re.I)
_ZH_MONEY = re.compile(r"多少钱|多少錢|费用|費用|价格|價格|价钱|價錢|租金|补贴|補貼|奖金|獎金|工资多少|"
                       r"收费|收費|报销多少|報銷多少")
_ZH_WEIGHT = re.compile(r"多重|重量|多沉")
_ZH_NUMBER = re.compile(r"多少|多长|多長|多久|多快|多大|多远|多遠|多高|多深|多宽|多寬|几|幾|哪年|"
                        r"哪一年|哪天|哪一天|何时|何時|什么时候|什麼時候|最高|最低|最多|至少|最少|最长|最長")
_ZH_CODE = re.compile(r"编号|編號|号码|號碼|密码|密碼|代码|代碼|型号|型號|电话|電話|网址|網址|邮箱|郵箱|"
                      r"网站|網站|网页|網頁|主页|主頁")
_ZH_PERSON = re.compile(r"谁|誰|哪位")

_DIGITS = re.compile(r"\d+(?:[.,:：]\d+)*")
_CURRENCY = re.compile(
    r"[£$€¥￥]\s?\d|\d(?:[\d,.]*)\s?(?:p\b|pence|pounds?|gbp|usd|eur|dollars?|euros?|yuan|rmb|cny|"
    r"元|块|镑|英镑|美元|欧元|歐元|新台币|新台幣|台币|台幣)|(?:nt\$|新台币|新台幣|人民币|人民幣|rmb|"
    r"gbp|usd|eur)\s?\d|\d\s?%|\bfree of charge\b|\b(?:no|without) charge\b|\bat no cost\b|不收费|不收費|"
    r"list price|标价|標價", re.I)
_WEIGHT_VALUE = re.compile(r"\d\s?(?:g|kg|grams?|kilograms?|kilos?|lb|lbs|pounds?|oz|t|tonnes?|"
                           r"克|千克|公斤|斤|吨|噸)(?![a-z])", re.I)
_EN_NUMBER_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|seventy|eighty|ninety|"
    r"forty|fifty|sixty|hundred|thousand|million|half|dozen|once|twice|daily|weekly|monthly|"
    r"yearly|annually|quarterly|hourly|midnight|noon|(?:a|an|every|each)\s+(?:second|minute|"
    r"hour|day|working day|week|fortnight|month|quarter|year))\b", re.I)
_ZH_NUMERALS = re.compile(r"[零〇一二两兩三四五六七八九十百千万萬半]|每天|每日|每周|每週|每月|每年|每季")
# Codes, numbers, e-mail addresses, URLs and domain names: a question about a website is
# answered by its address (linux-on-laptops.com), not by a sentence that calls it "a
# tremendous resource".
_CODE_VALUE = re.compile(r"\b[A-Z]{2,}[-\d]*\b|\b\w*\d\w*\b|[\w.+-]+@[\w-]+\.\w+|https?://\S+|"
                         r"(?i:\b(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|int|"
                         r"info|io|dev|de|uk|fr|eu|cn|tw|jp)\b)")
_NAME = re.compile(r"(?<![.!?:]\s)(?<!^)\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)*")


@lru_cache(maxsize=4096)
def expected(question: str) -> str | None:
    """The kind of value the question asks for, or None when it asks for no recognised kind."""
    if _NO_VALUE.search(question):
        return None
    if _TIME_OF_DAY.search(question):
        return TIME
    for kind, cue, _ in _UNITS:
        if cue.search(question):
            return kind
    if _VERSION_CUE.search(question):
        return VERSION
    if _EN_NAMED.search(question) or _ZH_NAMED.search(question):
        return None  # "用什么命令管理用户密码的有效期" asks for a command, not a password
    if _EN_QUANTITY.search(question) or _ZH_QUANTITY.search(question):
        return NUMBER
    for kind, en, zh in ((CODE, _EN_CODE, _ZH_CODE), (WEIGHT, _EN_WEIGHT, _ZH_WEIGHT),
                         (MONEY, _EN_MONEY, _ZH_MONEY), (PERSON, _EN_PERSON, _ZH_PERSON)):
        if en.search(question) or zh.search(question):
            return kind
    if _EN_NUMBER.search(question) or _ZH_NUMBER.search(question):
        return NUMBER
    return None


def _new_numbers(text: str, question: str) -> bool:
    asked = set(_DIGITS.findall(question))
    return any(n not in asked for n in _DIGITS.findall(text))


def _new_words(pattern: re.Pattern[str], text: str, question: str) -> bool:
    lower = question.lower()
    return any(m.group(0).lower() not in lower for m in pattern.finditer(text))


# Numbering that is not a value: list markers ("2."), section numbers ("4.1 Turnaround"),
# Chinese article numbers (第七条), heading-path separators.
_NUMBERING = re.compile(
    r"(?:^|(?<=[>›\n|]))\s*(?:(?:\d+[.)、]|[-*•]|[一二三四五六七八九十]+、)(?:\s+|$)|"
    r"\d+(?:\.\d+)+\s+(?=[A-Z\u4e00-\u9fff]))|第[一二三四五六七八九十百零〇\d]+[条條章节節款项項部]")


# A heading path's section numbers: "Chapter 5. The /var Hierarchy > 5.10. /var/log : Log
# files > 5.10.1. Purpose" (with a trailing dot, before any character).
_SECTION_NUMBER = re.compile(
    r"(?:^|(?<=[>›]))\s*(?:(?:chapter|section|part|appendix|annex|article)\s+)?"
    r"(?:\d+|[A-Z])(?:\.\d+)*\.?(?=\s|$)", re.I)


def heading_without_numbering(section: str) -> str:
    """A heading path without its chapter and section numbers: in a heading they number the
    document, they are not values ("How often must /var/log be rotated?" was answered with
    the heading "Chapter 5 … > 5.10.1. Purpose", read as holding a number)."""
    return without_numbering(_SECTION_NUMBER.sub(" ", section))


def _counts_none(text: str, question: str) -> bool:
    """Whether `text` says there are none of what a "how many X" question counts ("There must
    be no subdirectories in /usr/bin" for "How many subdirectories may /usr/bin have?")."""
    nouns = counted_nouns(question)
    return bool(nouns) and any(_stem(w) in nouns for m in _NONE_OF.finditer(text)
                               for w in m.groups() if w)


_NONE_OF = re.compile(r"\b(?:no|zero|not any)\s+([a-z][a-z-]*)(?:\s+([a-z][a-z-]*))?", re.I)


def without_numbering(text: str) -> str:
    """`text` without list markers, section and article numbers (they are not facts either: the
    "2." of the heading "2. Annual leave" does not support the answer "2")."""
    return _NUMBERING.sub(" ", text)


def has_value(kind: str | None, text: str, question: str) -> bool:
    """Whether `text` holds a value of `kind` that the question does not already hold."""
    if kind is None:
        return True
    text = without_numbering(text)
    if kind == MONEY:
        return _new_words(_CURRENCY, text, question)
    if kind == WEIGHT:
        return _new_words(_WEIGHT_VALUE, text, question)
    if kind == NUMBER:
        return (_new_numbers(text, question) or _new_words(_EN_NUMBER_WORDS, text, question)
                or _new_words(_ZH_NUMERALS, text, question) or _counts_none(text, question))
    for unit_kind, _, value in _UNITS:
        if kind == unit_kind:
            return _new_words(value, text, question)
    if kind == TIME:
        return _new_words(_TIME_VALUE, text, question)
    if kind == VERSION:
        return _new_words(_VERSION_VALUE, text, question)
    if kind == CODE:
        return _new_words(_CODE_VALUE, text, question)
    if kind == PERSON:  # a capitalised name not in the question; Chinese names are not told apart
        return bool(re.search(r"[\u4e00-\u9fff]", text)) or _new_words(_NAME, text, question)
    raise ValueError(f"unknown answer type {kind!r}")


# What a claim must say besides a value of the asked kind: the unit of "how long" and the noun
# counted by "how many X". Checked on generated answers only (a quoted passage sentence is
# judged by `has_value`): "The answer is: 4." does not say how long, and "The TW-40 has two
# memory modes" does not say how many readings.
_NUM = (r"(?:\d+(?:[.,]\d+)*|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
        r"fifteen|twenty|thirty|forty|fifty|sixty|ninety|hundred|thousand|a|an|half|a few)")
_COUNT = _NUM.replace("|a|an|", "|")  # "a log of readings" counts no readings
_ZH_NUM = r"[\d零〇一二两兩三四五六七八九十百千万萬半]+"
_TIME_UNITS = (r"seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|fortnights?|months?|"
               r"years?|yrs?|decades?|nights?|shifts?|terms?|semesters?")
_LENGTH_UNITS = (r"mm|cm|m|km|metres?|meters?|millimetres?|centimetres?|kilometres?|feet|foot|ft|"
                 r"inch(?:es)?|in|miles?|yards?|characters?|chars|words?|pages?|digits?|letters?")
_HOW_LONG = re.compile(r"\bhow long\b", re.I)
_LONG_VALUE = re.compile(
    rf"\b{_NUM}(?:\s?-?\s?(?:\w+\s){{0,2}})?\s?(?:{_TIME_UNITS}|{_LENGTH_UNITS})\b|"
    r"\b(?:overnight|indefinitely|permanently|forever|no limit|unlimited|a fortnight)\b", re.I)
_ZH_HOW_LONG = re.compile(r"多久|多长时间|多長時間|多少天|几天|幾天|多少小时|多少小時|多少分钟|多少分鐘|多少年|几年|幾年")
_ZH_LONG_VALUE = re.compile(
    rf"{_ZH_NUM}\s?(?:个|個)?\s?(?:天|日|小时|小時|钟头|鐘頭|分钟|分鐘|秒|周|週|星期|月|年|工作日|学时|學時)")
_HOW_MANY = re.compile(r"\bhow many ([a-z][a-z-]*)(?:\s([a-z][a-z-]*))?", re.I)
_NOT_NOUNS = {"of", "can", "do", "does", "did", "is", "are", "will", "would", "should", "must",
              "may", "in", "per", "a", "the", "times"}


def _stem(word: str) -> str:
    word = word.lower()
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def counted_nouns(question: str) -> set[str]:
    """The (singular) noun a "how many X" question counts: {"reading"} for "How many readings
    can …", {"working", "day"} for "how many working days"; empty when there is none."""
    m = _HOW_MANY.search(question)
    if not m:
        return set()
    words = [w for w in m.groups() if w and w.lower() not in _NOT_NOUNS]
    first = m.group(1).lower()
    if first in _NOT_NOUNS:
        return set()
    return {_stem(w) for w in (words if m.group(2) and m.group(2).lower() not in _NOT_NOUNS
                               else [first])}


def claim_misses(question: str, claim: str) -> str | None:
    """Why a generated claim does not say what the question asks (see above), or None."""
    text = without_numbering(claim)
    if _HOW_LONG.search(question) and not _LONG_VALUE.search(text):
        return "the question asks how long; the answer gives no duration or length"
    if _ZH_HOW_LONG.search(question) and not _ZH_LONG_VALUE.search(text) \
            and not _LONG_VALUE.search(text):
        return "the question asks how long; the answer gives no duration"
    nouns = counted_nouns(question)
    if nouns:
        after = (m.group(1).split() for m in
                 re.finditer(rf"\b{_COUNT}\b((?:\s?[\w-]+){{1,4}})", text, re.I))
        if not any(nouns & {_stem(w) for w in words} for words in after):
            return f"the question asks how many {'/'.join(sorted(nouns))}; the answer counts none"
    return None


# Questions that ask for something technical by name ("Which package …", "What command …",
# "In which directory …", 哪个命令): the answer names it, and a name of that kind is usually
# written as an identifier (build-essential, /var/lib/dpkg/info, security.debian.org,
# apt-mark hold, "mail-transport-agent"), which a sentence that only talks about it lacks.
_EN_NAMED = re.compile(
    r"\b(?:which|what)\s+(?:\w+\s){0,2}?(?:package|tool|program|command|utility|file|directory|"
    r"folder|path|server|host|target|option|flag|setting|line|module|library|daemon|"
    r"service|codename|name|variable|key|group|shortcut)s?\b|\bwhat is the name\b", re.I)
_HOW_TO = re.compile(r"\bhow (?:do|can|should) (?:i|you|we)\b|怎样|怎麼|怎么|如何", re.I)
_ZH_NAMED = re.compile(r"(?:哪个|哪個|什么|什麼|哪一个|哪一個)(?:\S{0,4}?)(?:命令|工具|软件包|軟件包|包|程序|"
                       r"文件|目录|目錄|服务器|伺服器|选项|選項|参数|參數|模块|模組|服务|服務|变量|變量|"
                       r"快捷键|快捷鍵|组|組|沙盒)")
_IDENTIFIER = re.compile(
    r"(?<![\w/.-])(?:/[\w.+-]+(?:/[\w.+-]+)*/?|--?[A-Za-z][\w-]*|[A-Za-z][\w+]*(?:[-_.][\w+]+)+)"
    r"(?![\w/-])|\"[^\"\s]{2,40}\"|`[^`]{2,60}`|“[^”\s]{2,40}”")


def asks_for_name(question: str) -> bool:
    """Whether the question asks for a technical name (package, command, path, server …)."""
    return bool(_EN_NAMED.search(question) or _ZH_NAMED.search(question)
                or _HOW_TO.search(question))


def answer_form(question: str, text: str) -> bool:
    """Whether `text` holds the answer in the form the question asks for, beyond `has_value`:
    a duration for "how long", the counted noun for "how many X", an identifier that is not in
    the question for a question about a technical name. Used to rank sentences to quote (a
    sentence that restates the question ties with the one after it that answers it), never to
    reject one."""
    if _HOW_LONG.search(question) or _ZH_HOW_LONG.search(question) or counted_nouns(question):
        return claim_misses(question, text) is None
    if asks_for_name(question):
        lower = question.lower()
        return any(m.group(0).strip("\"`“”").lower() not in lower
                   for m in _IDENTIFIER.finditer(without_numbering(text)))
    return False


# "Which deadweight tester is …", "What kind of package am I missing": the thing the question
# asks for an instance of. Attribute and value nouns ("What colour is …", "Which year …") are
# left out: a passage answers those with the value alone ("blue", "2014").
_ASKED_THING = re.compile(
    r"^\s*(?:in |on |at |from |for |to |with )?(?:which|what)\s+"
    r"((?:[a-z][\w-]*\s+){0,2}?[a-z][\w-]*)\s+"
    r"(?:is|are|was|were|do|does|did|can|could|should|must|will|would|has|have|had)\b", re.I)
_ATTRIBUTE = re.compile(r"\b(?:colou?r|type|kind|sort|size|year|day|date|time|month|week|hour|"
                        r"version|number|name|value|amount|level|rate|percentage|share|price|"
                        r"cost|length|width|height|depth|weight|speed|temperature|voltage|range|"
                        r"way|order|format|language|unit|part|step|reason|one|ones)s?\b", re.I)


def asked_thing(question: str) -> str | None:
    """The noun phrase a "which/what X is …" question asks for an instance of, or None."""
    m = _ASKED_THING.search(question)
    if not m or _ATTRIBUTE.search(m.group(1)):
        return None
    return m.group(1)
