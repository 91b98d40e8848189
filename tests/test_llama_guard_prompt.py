"""Llama Guard 3 prompt text, answer parsing and verdict rules (no model needed)."""

from __future__ import annotations

import pytest

from cutout_guard.engines.llama_guard import Answer, decide, parse_answer
from cutout_guard.engines.llama_guard_prompt import (
    HAZARDS,
    LLAMA_GUARD_3_1B,
    LLAMA_GUARD_3_8B,
    parse_policy,
    template_for,
)

# Meta's Llama Guard 3 (8B) chat template rendered for one user message, typed out by hand.
GOLDEN_8B = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n"
    "\n"
    "Task: Check if there is unsafe content in 'User' messages in conversations according our safety policy with the below categories.\n"
    "\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "S1: Violent Crimes.\n"
    "S2: Non-Violent Crimes.\n"
    "S3: Sex Crimes.\n"
    "S4: Child Exploitation.\n"
    "S5: Defamation.\n"
    "S6: Specialized Advice.\n"
    "S7: Privacy.\n"
    "S8: Intellectual Property.\n"
    "S9: Indiscriminate Weapons.\n"
    "S10: Hate.\n"
    "S11: Self-Harm.\n"
    "S12: Sexual Content.\n"
    "S13: Elections.\n"
    "S14: Code Interpreter Abuse.\n"
    "<END UNSAFE CONTENT CATEGORIES>\n"
    "\n"
    "<BEGIN CONVERSATION>\n"
    "\n"
    "User: A brown dog sitting on a wooden bench in a park.\n"
    "\n"
    "<END CONVERSATION>\n"
    "\n"
    "Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
)


def test_golden_prompt_for_a_caption():
    assert LLAMA_GUARD_3_8B.render("A brown dog sitting on a wooden bench in a park.") == GOLDEN_8B


def test_text_is_stripped_as_the_template_does():
    assert LLAMA_GUARD_3_8B.render("  \n A brown dog sitting on a wooden bench in a park.\n\n ") == GOLDEN_8B


def test_prefix_body_and_header_make_the_whole_prompt():
    text = "A cat."
    prompt = LLAMA_GUARD_3_8B.render(text)
    assert prompt.startswith(LLAMA_GUARD_3_8B.prefix()) and LLAMA_GUARD_3_8B.prefix().endswith("User:")
    assert prompt == LLAMA_GUARD_3_8B.prefix() + LLAMA_GUARD_3_8B.body(text) + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def test_1b_template_lists_13_categories_and_a_space_before_eot():
    prompt = LLAMA_GUARD_3_1B.render("A cat.")
    assert "S13: Elections.\n<END UNSAFE CONTENT CATEGORIES>" in prompt and "S14" not in prompt
    assert "violated categories. <|eot_id|>" in prompt


@pytest.mark.parametrize(
    "metadata, filename, expected",
    [
        ({}, "Llama-Guard-3-8B.Q4_K_M.gguf", "llama-guard-3-8b"),
        ({"general.name": "Llama Guard 3 1B"}, "model.gguf", "llama-guard-3-1b"),
        ({"general.size_label": "1B"}, "x.gguf", "llama-guard-3-1b"),
        ({}, "Llama-Guard-3-1B.Q4_K_M.gguf", "llama-guard-3-1b"),
        ({"general.name": "Llama Guard 3 8B"}, "llama-guard-3-8b-q4_k_m.gguf", "llama-guard-3-8b"),
    ],
)
def test_template_chosen_from_metadata_or_file_name(metadata, filename, expected):
    assert template_for(metadata, filename).name == expected


def test_policy_parsing():
    assert parse_policy("all") == tuple(HAZARDS)
    assert parse_policy("") == tuple(HAZARDS)
    assert parse_policy("s10, S1 S3") == ("S1", "S3", "S10")
    assert parse_policy("S9-S11,S2") == ("S2", "S9", "S10", "S11")
    for bad in ("S15", "S3-S1", "violence", ","):
        with pytest.raises(ValueError):
            parse_policy(bad)
    with pytest.raises(ValueError):
        parse_policy("S14", LLAMA_GUARD_3_1B)


@pytest.mark.parametrize(
    "text, label, categories",
    [
        ("safe", "safe", ()),
        (" safe\n", "safe", ()),
        ("unsafe\nS1", "unsafe", ("S1",)),
        ("unsafe\nS1,S10", "unsafe", ("S1", "S10")),
        ("unsafe\n S2, S14 ", "unsafe", ("S2", "S14")),
        ("unsafe", None, ()),  # no category line
        ("unsafe\nS15", None, ()),  # unknown code
        ("unsafe\nviolence", None, ()),
        ("unsafe\nS1\nsafe", None, ()),
        ("safe\nS1", None, ()),
        ("Safe", None, ()),
        ("I think it is fine", None, ()),
        ("", None, ()),
    ],
)
def test_answer_parsing(text, label, categories):
    answer = parse_answer(text, LLAMA_GUARD_3_8B)
    assert answer.label == label
    assert answer.categories == categories
    assert (answer.error == "") == (label is not None)


ALL = tuple(HAZARDS)


def test_verdict_rules():
    # safe only when the answer is "safe" and p_unsafe is below the threshold
    assert decide(Answer("safe"), 0.1, threshold=0.5, policy=ALL)[0] is True
    assert decide(Answer("safe"), 0.5, threshold=0.5, policy=ALL)[0] is False
    # an unsafe answer is unsafe whatever p_unsafe says
    safe, counted, _ = decide(Answer("unsafe", ("S1", "S10")), 0.2, threshold=0.5, policy=ALL)
    assert safe is False and counted == ("S1", "S10")
    # fail closed: an unparseable answer is never safe, not even at p_unsafe 0
    safe, counted, reason = decide(Answer(None, error="garbage"), 0.0, threshold=0.5, policy=ALL)
    assert safe is False and counted == () and "garbage" in reason


def test_policy_filters_after_generation():
    safe, counted, reason = decide(Answer("unsafe", ("S1", "S10")), 0.9, threshold=0.5, policy=("S10", "S11"))
    assert safe is False and counted == ("S10",)
    safe, counted, reason = decide(Answer("unsafe", ("S5",)), 0.9, threshold=0.5, policy=("S1", "S10"))
    assert safe is True and counted == () and "outside the policy" in reason and "S5" in reason
    # the policy cannot rescue an answer that was not parsed
    assert decide(Answer(None, error="x"), 0.9, threshold=0.5, policy=("S1",))[0] is False
