"""Expected answer types in the gate and the extraction: a near miss (the passage is about the
right thing but does not hold what is asked) scores nothing, however many words it shares."""

from __future__ import annotations

import pytest

from serving import answer_types as at
from serving.grounding import answerability, check, extract

TW40 = [(1, "Product: Tidewell TW-40 vented pressure water level logger. The TW-40 logs water "
            "level and temperature every 15 minutes.", "TW-40 datasheet > Overview"),
        (2, "The Tidewell TW-40 housing is made of stainless steel and weighs 310 g.",
         "TW-40 datasheet > Mechanical")]


@pytest.mark.parametrize(("question", "kind"), [
    ("How much does a Tidewell TW-40 logger weigh?", at.WEIGHT),
    ("How much does an express calibration cost?", at.MONEY),
    ("How many weeks at full pay does the partner of a primary carer get?", at.NUMBER),
    ("On which day of the month are salaries paid?", at.NUMBER),
    ("What is the Wi-Fi password of the guest network?", at.CODE),
    ("What is the minimum length of a staff password?", at.NUMBER),
    ("Which field team won the Lantern Award?", at.PERSON),
    ("At what time does the gateway look for updates?", at.TIME),
    ("青岚工厂食堂的早餐几点开始供应？", at.TIME),
    ("门禁卡遗失后补发要付多少钱？", at.MONEY),
    ("试用期有多长？", at.NUMBER),
    ("Is there a website where I can check whether my laptop works with Linux?", at.CODE),
    ("哪个网站发布 Debian 的安全公告？", at.CODE),
    ("What is the final firmware version released for the Fennick FX-7 probe?", at.VERSION),
    ("这本 Debian 参考手册是第几版？", at.VERSION),
    ("Which file holds just the version number of my Debian release?", None),
    ("Why does Lumenhollow have no site with the code 04?", None),
    ("What does the quality flag S stand for?", None),
    ("What is Brightwater?", None),
])
def test_the_kind_a_question_asks_for(question, kind):
    assert at.expected(question) == kind


def test_a_value_counts_only_when_the_question_does_not_hold_it():
    question = "How many days can a Skerrow S3 keep running without sun?"
    assert not at.has_value(at.NUMBER, "The Skerrow S3 has a solar panel.", question)
    assert at.has_value(at.NUMBER, "It runs for fourteen days on its battery.", question)
    assert at.has_value(at.NUMBER, "试用期为 3 个月。", "试用期有多长？")
    # list markers, section and article numbers are not values
    assert not at.has_value(at.NUMBER, "2.", "最多可以借几天？")
    assert not at.has_value(at.NUMBER, "Policy > 5. Reporting incidents", "How soon?")
    assert not at.has_value(at.NUMBER, "第七条 住宿费标准：", "住宿标准是多少？")
    assert at.has_value(at.MONEY, "补发费用新台币 300 元由本人负担。", "补发要付多少钱？")
    assert not at.has_value(at.MONEY, "A 45-day free trial is available.", "What does it cost?")


def test_a_near_miss_is_not_answerable_and_nothing_is_extracted():
    question = "How much does a Tidewell TW-40 logger weigh?"
    near_miss = TW40[:1]
    assert answerability(question, near_miss) == 0.0 and extract(question, near_miss) is None
    n, sentence, score = extract(question, TW40)
    assert n == 2 and "310 g" in sentence and score > 0.3


def test_a_year_the_question_names_must_be_in_the_passage():
    passages = [(1, "The field team that reports the most useful near miss each quarter wins the "
                    "Lantern Award, won in 2023 by the Tessel team.")]
    assert answerability("Which field team won the Lantern Award in 2024?", passages) == 0.0
    assert answerability("Which field team won the Lantern Award in 2023?", passages) > 0.3


def test_the_section_heading_is_part_of_the_passage():
    passages = [(1, "This patch fixes the alarm e-mails.", 'Release notes > 4.3.1 "Gannet Bank", '
                                                           "released 17 September 2024"),
                (2, "Brightwater 4.0 was a major release.", "Release notes > 4.0.0")]
    question = "On what date was Brightwater 4.3.1 released?"
    n, sentence, _ = extract(question, passages)
    assert n == 1 and "17 September 2024" in sentence
    assert check(question, "It was released on 17 September 2024 [1].", passages).supported


def test_an_answer_without_the_asked_value_is_not_supported():
    verdict = check("How much does a Tidewell TW-40 logger weigh?",
                    "The Tidewell TW-40 is a vented pressure water level logger [1].", TW40)
    assert not verdict.supported and "asks for a weight" in verdict.reason
    assert check("How much does a Tidewell TW-40 logger weigh?", "It weighs 310 g [2].",
                 TW40).supported


@pytest.mark.parametrize(("question", "kind", "right", "wrong"), [
    ("青岚工厂的叉车最高能开多快？", at.SPEED, "叉车在车间内限速 5 km/h。", "青岚工厂占地约 12,000 平方米。"),
    ("台北辦事處在哪一棟大樓的幾樓？", at.FLOOR, "辦事處位於鯨光大樓 12 樓。", "台北辦事處在 2022 年成立。"),
    ("How much RAM does the installer need at least?", "size",
     "The installer needs at least 512 MB of RAM.", "The answer is: 400."),
    ("Below which water temperature must a drysuit be worn?", at.TEMPERATURE,
     "Wear a drysuit when the water is below 12 °C.", "Drysuits are checked every 6 months."),
])
def test_quantities_with_a_unit_need_the_unit(question, kind, right, wrong):
    assert at.expected(question) == kind
    assert at.has_value(kind, right, question) and not at.has_value(kind, wrong, question)


def test_code_fences_and_empty_markers_are_not_sentences():
    from serving.grounding import sentences

    units = sentences("Run:\n```\n# apt update\n```\n-\n对于中文，fcitx5 可以是一个替代的输入法框架。")
    assert "```" not in units and "-" not in units
    assert "# apt update" in units and any("fcitx5" in u for u in units)


def test_heading_numbers_do_not_support_a_bare_number():
    passages = [(1, "Full-time employees receive 27 days of annual leave per leave year.",
                 "Leave Policy > 2. Annual leave > 2.1 Entitlement")]
    question = "How many days of annual leave do full-time employees get?"
    assert not check(question, "The answer is: 2.", passages).supported
    assert check(question, "27 days [1]", passages).supported


@pytest.mark.parametrize(("question", "right", "wrong"), [
    ("How many readings can a Tidewell TW-40 keep in its memory?",
     "It keeps up to 520,000 readings [2].", "The TW-40 has two memory modes [2]."),
    ("How many instruments can one gateway serve?", "Up to 64 field instruments per gateway.",
     "One gateway serves the whole site."),
    ("How long must an instrument rest in the laboratory before it is measured?",
     "At least 4 hours [1].", "The answer is: 4."),
    ("How long is the probe cable?", "The cable is 2.5 m long.", "The cable is 2.5."),
    ("年假有多少天？", "员工每年享有 27 天带薪年假。", "员工每年享有带薪年假 27。"),
])
def test_a_claim_must_say_the_unit_or_the_counted_noun(question, right, wrong):
    assert at.claim_misses(question, right) is None
    assert at.claim_misses(question, wrong)


def test_a_count_of_something_else_is_not_supported():
    passages = [(1, "The TW-40 has two memory modes: stop-when-full and overwrite. The memory "
                    "holds 520,000 readings.", "TW-40 datasheet > Memory")]
    question = "How many readings can a Tidewell TW-40 keep in its memory?"
    verdict = check(question, "The TW-40 has two memory modes [1].", passages)
    assert not verdict.supported and "how many reading" in verdict.reason
    assert check(question, "It keeps 520,000 readings [1].", passages).supported


def test_a_thing_named_in_the_question_that_no_passage_names_is_not_answerable():
    passages = [(1, "用 ufw 开放端口：运行 ufw allow 22 即可开放 22 端口。", "防火墙 > ufw"),
                (2, "nftables 是新的包过滤框架。", "防火墙 > nftables")]
    assert answerability("用 firewalld 怎么开放一个端口？", passages) == 0.0
    assert answerability("用 ufw 怎么开放一个端口？", passages) > 0.3
    assert extract("用 firewalld 怎么开放一个端口？", passages) is None
    tw = [(1, "The TW-40 weighs 310 g.", "TW-40 datasheet")]
    assert answerability("How much does a TW-50 weigh?", tw) == 0.0
    assert answerability("How much does a TW-40 weigh?", tw) > 0.3


def test_a_version_is_a_number_standing_alone_not_the_digits_of_a_code():
    question = "What is the final firmware version released for the Fennick FX-7 probe?"
    assert at.has_value(at.VERSION, "The last release was 5.6.3.", question)
    assert not at.has_value(at.VERSION, "See the service bulletin SB-FX7-09.", question)


def test_a_website_question_is_answered_by_an_address_not_by_praise_of_it():
    # The Debian FAQ, a tuned adapter's answer (2026-12-03, learning rate 1e-3): a verbatim copy
    # of the sentence after the address passed the check, unmarked and wrong.
    question = "Is there a website where I can check whether my laptop works with Linux?"
    passages = [(1, "For laptops, https://www.linux-on-laptops.com/ is a very good website to see "
                    "if someone else is able to get it to work under Linux. The website is not "
                    "specific to Debian, but is nevertheless a tremendous resource.",
                 "Chapter 4 > 4.3. Will Debian run on my laptop?")]
    praise = "The website is not specific to Debian, but is nevertheless a tremendous resource."
    verdict = check(question, praise, passages)
    assert not verdict.supported and "code" in verdict.reason
    assert check(question, "Yes, https://www.linux-on-laptops.com/ [1]", passages).supported
    n, sentence, _ = extract(question, passages)
    assert n == 1 and "linux-on-laptops.com" in sentence
    assert at.has_value(at.CODE, "See linux-on-laptops.com or www.debian.org.", question)
    assert not at.has_value(at.CODE, "Use the website.", question)
