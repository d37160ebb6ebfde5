"""Which passage sentence `extract` quotes, and claims that pair facts from different sentences
(serving/grounding.py, serving/answer_types.py). Each case is a miss read in an eval run on the
Debian FAQ or the Chinese Debian Reference, rebuilt by hand."""

from __future__ import annotations

import pytest

from serving import answer_types
from serving.grounding import CheckerConfig, answerability, check, extract

CODENAMES = "Chapter 6 > 6.2.2. Where do these codenames come from?"
TOYS = (1, "- bookworm (Debian 12) was a green toy worm.\n- trixie (Debian 13) was a blue plastic "
           "triceratops.\n- sid was the evil neighbor kid next door who broke all toys.", CODENAMES)


def test_a_heading_that_restates_the_question_is_never_quoted():
    n, sentence, _ = extract("Where do these codenames come from?", [TOYS])
    assert n == 1 and sentence != CODENAMES and "was" in sentence


def test_a_sentence_that_announces_a_command_is_quoted_with_it():
    passages = [(1, "To list all packages for which newer versions are available, run:\n\n"
                    "apt list --upgradable\n\nThe list is sorted by name.")]
    _, sentence, _ = extract("How do I list the packages that have newer versions available?",
                             passages)
    assert sentence == ("To list all packages for which newer versions are available, run: "
                        "apt list --upgradable")


def test_the_sentence_naming_the_thing_beats_the_one_restating_the_question():
    passages = [(1, "Similarly, exim4 and sendmail both provide the functionality of a mail "
                    "transport agent. They are therefore said to provide the virtual package "
                    '"mail-transport-agent".')]
    _, sentence, _ = extract("Which virtual package do exim4 and sendmail both provide?",
                             passages)
    assert "mail-transport-agent" in sentence


def test_how_long_prefers_the_sentence_with_a_duration():
    passages = [(1, "So on June 15, both testing and unstable have XYZ-3.7 in their "
                    "repositories. After 5 days, XYZ-3.7 from unstable migrates into testing.")]
    _, sentence, _ = extract("How long does a package usually wait in unstable before it "
                             "migrates to testing?", passages)
    assert "5 days" in sentence


@pytest.mark.parametrize("question", ["用什么命令管理用户密码的有效期？",
                                      "GNOME 下在几个输入法之间切换用什么快捷键？",
                                      "Which package do I need to install to get lsb_release?"])
def test_a_question_about_a_named_thing_asks_for_no_number_or_code(question):
    """密码 (password) and 几个 (several) made these a code and a number question, which no
    command name could answer: the table row naming `chage` was never a candidate."""
    assert answer_types.expected(question) is None and answer_types.asks_for_name(question)


def test_a_command_in_a_table_row_is_extracted_for_a_chinese_question():
    passages = [(1, "第 4 章 认证和访问控制\n\n| 命令 | 功能 |\n|---|---|\n"
                    "| chage | 管理密码有效期信息 |\n| passwd | 修改密码 |")]
    _, sentence, _ = extract("用什么命令管理用户密码的有效期？", passages)
    assert "chage" in sentence


def test_a_lead_in_without_punctuation_is_quoted_with_the_command_it_announces():
    """The FAQ's "To list all the files provided by the installed package foo execute the
    command" stands above `dpkg --listfiles foo` in a block of its own, with no colon."""
    passages = [(1, "To list all the files provided by the installed package foo execute the "
                    "command\n\ndpkg --listfiles foo\n\nSee the manual page for more.")]
    _, sentence, _ = extract("How do I list the files provided by the installed package foo?",
                             passages)
    assert sentence.endswith("execute the command dpkg --listfiles foo")
    prose = [(1, "Packages are listed by dpkg\n\nThe list is sorted by name.")]
    _, sentence, _ = extract("How are packages listed by dpkg?", prose)
    assert sentence == "Packages are listed by dpkg"  # no command line follows: quoted alone


def test_a_thing_no_passage_mentions_makes_the_question_unanswerable():
    """"Which deadweight tester is the primary pressure reference …" with none of the retrieved
    passages about a deadweight tester: both models answered with the procedure's title, and
    the check passed it (every word of the title is in the passage)."""
    passages = [(1, "This procedure describes how the Quarry Lab calibrates pressure water "
                    "level loggers.", "Calibration Procedure for Pressure Water Level Loggers")]
    question = "Which deadweight tester is the primary pressure reference in the Quarry Lab?"
    assert answer_types.asked_thing(question) == "deadweight tester"
    assert answerability(question, passages) == 0.0 and extract(question, passages) is None
    held = passages + [(2, "The primary pressure reference is the DW-9 deadweight tester.")]
    assert extract(question, held)[1].startswith("The primary pressure reference is the DW-9")
    # a thing named by one noun is answered by an instance alone ("… served through
    # security.debian.org" for "From which server …"), and attributes by their value
    assert answer_types.asked_thing("From which server are the updates delivered?") == "server"
    assert answerability("From which server are the security updates delivered?",
                         [(1, "All the security updates are served through "
                              "security.debian.org.")]) > 0
    assert answer_types.asked_thing("What colour is the TW-40 housing?") is None

def test_a_claim_must_not_pair_facts_from_neighbouring_sentences():
    question = "Which codename was given to Debian 13?"
    wrong = check(question, 'The codename "sid" was given to Debian 13.', [TOYS])
    assert not wrong.supported and "does not name 13" in wrong.reason
    assert check(question, "Debian 13 was given the codename trixie [1].", [TOYS]).supported


def test_the_form_bonus_ranks_but_never_rejects():
    question = "Which program helps me file a bug report?"
    assert answer_types.answer_form(question, "You can use the reportbug-ng tool.")
    assert not answer_types.answer_form(question, "You can use the package reportbug.")
    n, sentence, _ = extract(question, [(1, "You can use the package reportbug to file a bug "
                                            "report.")])
    assert n == 1 and "reportbug" in sentence


@pytest.mark.parametrize("answer", ["1.", "2. [1]", "一、"])
def test_a_bare_list_marker_is_an_empty_answer(answer):
    """What is left of "1.\n\n[1] docs/x.html › …" once the copied header is cut off: the
    "1" of "ps --pid 1 -f" in the passage made it look supported."""
    passages = [(1, "你的系统中实际使用的 init 命令可以使用 ps --pid 1 -f 命令确认。")]
    verdict = check("怎么确认系统里实际在用的 init 程序是哪个？", answer, passages)
    assert not verdict.supported and verdict.reason == "the answer is degenerate (empty)"


def test_a_claim_must_not_pair_a_name_with_a_neighbouring_line():
    """The tuned adapter's "The prefix for part numbers for Halyard parts is `TW-`" passed."""
    passages = [(1, "Part numbers have a two-letter family prefix followed by a five-digit "
                    "number:\n\n- `TW-` Tidewell parts\n- `SK-` Skerrow parts\n"
                    "- `HY-` Halyard parts", "Operations > Part numbers")]
    question = "Which prefix do part numbers for Halyard parts start with?"
    wrong = check(question, "The prefix for part numbers for Halyard parts is `TW-`", passages)
    assert not wrong.supported and "does not name halyard" in wrong.reason
    right = check(question, "The prefix for part numbers for Halyard parts is `HY-`", passages)
    assert right.reason != wrong.reason and "halyard" not in (right.reason or "")


def test_a_bare_value_must_come_from_the_best_sentence():
    """Base's "The answer is: 2 working days." for the advance-replacement deadline passed on
    `data/eval`: its sentence (the dead-on-arrival clause) was 0.78 x as relevant as the one
    with 21 days, over the 0.7 margin. Here the wrong sentence scores 0.51 x, so the margins
    are set around it: a claim that says what it is about is held to `relevance_margin`, a
    bare value to the stricter `bare_value_margin`."""
    passages = [(1, "Advance replacement: we ship a loan unit at once. The faulty unit must "
                    "reach Lumenhollow within 21 days, otherwise the loan unit is invoiced."),
                (2, "DOA instruments are replaced with a new unit instead of being repaired, "
                    "and the replacement is shipped within 2 working days.")]
    question = "Within how many days must the faulty unit arrive after an advance replacement?"
    cfg = CheckerConfig(relevance_margin=0.5, bare_value_margin=0.8)
    bare = check(question, "The answer is: 2 working days.", passages, cfg)
    assert not bare.supported and "is not the one about the question" in bare.reason
    assert bare.relevance == pytest.approx(0.51, abs=0.01)
    said = check(question, "The replacement is shipped within 2 working days [2].", passages, cfg)
    assert said.supported and said.passage == 2
    assert check(question, "The answer is: 21 days.", passages, cfg).supported


def test_word_families_rank_quotes_but_not_the_gate():
    """"Who decided …": the tuned adapter's wrong answer on the Debian FAQ was quoted over with
    the sentence that restates "Toy Story characters", not with "The decision … was made by
    Bruce Perens" (Snowball stems decided/decision apart). Quotes match word families
    (`textunits.fold`); the gate keeps the plain stems, so a family member alone never makes
    a question answerable."""
    names = "6.2. What are all those names like etch, lenny, etc.? > " + CODENAMES
    passages = [(1, "- sid was the evil neighbor kid next door who broke all toys.\n\nThe "
                    "decision of using Toy Story names was made by Bruce Perens who was, at the "
                    "time, the Debian Project Leader and was working also at Pixar.", names),
                (2, "So far they have been characters taken from the \"Toy Story\" movies by "
                    "Pixar.\n\n- buzz (Debian 1.1) was the spaceman Buzz Lightyear,", names)]
    question = "Who decided that Debian releases would be named after Toy Story characters?"
    assert extract(question, passages)[1].startswith("The decision of using Toy Story names")
    asked = "How much does a Brightwater subscription cost?"
    about = [(1, "Brightwater subscribers receive the newsletter. The field course costs £340.")]
    plain = [(1, "Brightwater readers receive the newsletter. The field course costs £340.")]
    assert answerability(asked, about) == answerability(asked, plain)


def test_section_numbers_of_a_heading_are_no_value_and_none_is_a_count():
    """On the FHS 3.0 PDF "How often must /var/log be rotated?" (unanswerable) was answered by
    quoting the heading "Chapter 5 … > 5.10.1. Purpose", read as holding a number, and "How
    many subdirectories may /usr/bin have?" by the heading above "There must be no
    subdirectories in /usr/bin."."""
    var_log = (1, "This directory contains miscellaneous log files.",
               "Chapter 5. The /var Hierarchy > 5.10. /var/log : Log files > 5.10.1. Purpose")
    rotated = "How often must /var/log be rotated?"
    assert answerability(rotated, [var_log]) == 0.0 and extract(rotated, [var_log]) is None
    usr_bin = (1, "There must be no subdirectories in /usr/bin.",
               "Chapter 4. The /usr Hierarchy > 4.4. /usr/bin : Most user commands > 4.4.2. "
               "Requirements")
    many = "How many subdirectories may /usr/bin have?"
    assert extract(many, [usr_bin])[1] == "There must be no subdirectories in /usr/bin."
    assert not answer_types.has_value(answer_types.NUMBER, "There must be no files in /usr/bin.",
                                      many)
    released = (1, "The release fixed the logger clock.", "Releases > 4.3.1, released 2024")
    assert answerability("When was 4.3.1 released?", [released]) > 0


def test_a_bare_value_is_judged_by_its_own_row_not_its_neighbours():
    """The adapter retrained this session answered "A: £185." for the express price: with the
    words of the express row beside it, the standard row looked as relevant as the best."""
    table = (1, "| Service | Turnaround | Price |\n|---|---|---|\n"
                "| Standard calibration | 8 working days | £185 per logger |\n"
                "| Express calibration | 3 working days | £295 per logger |\n"
                "| Quick check (5 points) | 5 working days | £110 per logger |",
             "Calibration Procedure > 10. Turnaround and prices")
    question = "How much does an express calibration of a logger cost?"
    wrong = check(question, "A: £185.", [table])
    assert not wrong.supported and "is not the one about the question" in wrong.reason
    assert check(question, "A: £295.", [table]).supported
    assert check(question, "An express calibration costs £295 per logger [1].", [table]).supported


def test_a_path_is_a_fact_and_must_be_whole():
    """The tuned FHS adapter's "The mail spool must be accessible through /var/spool …"
    passed: every word of it is in the passage, whose /var/spool is only the start of the old
    location /var/spool/mail."""
    passage = [(1, "The mail spool must be accessible through /var/mail and the mail spool "
                   "files must take the form <username>. The logical location for this "
                   "directory was changed from /var/spool/mail.", "5.11. /var/mail")]
    question = "Where must the mail spool be accessible?"
    wrong = check(question, "The mail spool must be accessible through /var/spool.", passage)
    assert not wrong.supported and "/var/spool not in passage [1]" in wrong.reason
    assert check(question, "The mail spool must be accessible through /var/mail.",
                 passage).supported
    assert check(question, "Through /var/spool/mail, before the change.", passage).reason \
        != wrong.reason
