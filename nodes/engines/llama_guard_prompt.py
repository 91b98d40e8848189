"""Meta's Llama Guard 3 prompt, built by the pack, tokenized so that the text under check stays data.

The prompt is Meta's published template for classifying one ``User`` turn (the chat template of
``meta-llama/Llama-Guard-3-8B`` rendered for a single user message; the 1B model's template lists
S1–S13 and has a space before ``<|eot_id|>``). It is cut in three parts:

- **prefix**: everything before the text under check, ending in ``User:``. It is the same for every
  check, so its KV state is computed once per loaded model.
- **body**: ``" " + text.strip()`` followed by the plain-text start of the closing instructions,
  tokenized in one piece **with special tokens disabled**: ``<|eot_id|>``, header tokens, newlines,
  "safe" or fake category lists in the text become ordinary text tokens and cannot end the turn.
- **tail**: the control tokens ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>`` and the
  ``\\n\\n`` after them, from the pack's own constant.

llama.cpp splits a prompt at special tokens before BPE, and the prefix ends in ``:`` followed by a
space (always a pre-token boundary), so prefix + body + tail is exactly the tokenization of the
whole rendered prompt with special tokens enabled, whenever the text holds no special-token string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

# MLCommons hazard taxonomy as Llama Guard 3 names it (codes are fixed; the 1B model has no S14).
HAZARDS: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

BEGIN_TEXT = "<|begin_of_text|>"
ANSWER_HEADER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"

# tokenize(text, special) -> token ids, without BOS
Tokenize = Callable[[str, bool], list]


@dataclass(frozen=True)
class Template:
    """One Llama Guard 3 prompt layout: the hazards it lists and its small spelling differences."""

    name: str
    hazards: Mapping[str, str]
    space_before_eot: bool = False

    def prefix(self) -> str:
        categories = "".join(f"{code}: {name}.\n" for code, name in self.hazards.items())
        return (
            f"{BEGIN_TEXT}<|start_header_id|>user<|end_header_id|>\n\n"
            "Task: Check if there is unsafe content in 'User' messages in conversations according our "
            "safety policy with the below categories.\n\n"
            "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
            f"{categories}"
            "<END UNSAFE CONTENT CATEGORIES>\n\n"
            "<BEGIN CONVERSATION>\n\n"
            "User:"
        )

    def closing(self) -> str:
        """The plain-text instructions after the text under check (no special tokens)."""
        return (
            "\n\n<END CONVERSATION>\n\n"
            "Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
            " - First line must read 'safe' or 'unsafe'.\n"
            " - If unsafe, a second line must include a comma-separated list of violated categories."
            + (" " if self.space_before_eot else "")
        )

    def body(self, text: str) -> str:
        return " " + text.strip() + self.closing()

    def render(self, text: str) -> str:
        """The whole prompt as a string (what the chat template would print)."""
        return self.prefix() + self.body(text) + ANSWER_HEADER


LLAMA_GUARD_3_8B = Template("llama-guard-3-8b", HAZARDS)
LLAMA_GUARD_3_1B = Template(
    "llama-guard-3-1b", {code: name for code, name in HAZARDS.items() if code != "S14"}, space_before_eot=True
)


def template_for(metadata: Mapping[str, str], filename: str = "") -> Template:
    """The 1B layout for a GGUF whose metadata or file name says Llama Guard 3 1B, else the 8B one."""
    label = str(metadata.get("general.size_label", "")).upper()
    names = [str(metadata.get(k, "")) for k in ("general.name", "general.basename")] + [filename]
    if label == "1B" or any("GUARD-3-1B" in n.upper().replace(" ", "-").replace("_", "-") for n in names):
        return LLAMA_GUARD_3_1B
    return LLAMA_GUARD_3_8B


@dataclass(frozen=True)
class PromptTokens:
    prefix: tuple[int, ...]  # constant per model: evaluated once, its KV state reused
    body: tuple[int, ...]  # the text under check + closing instructions + answer header

    @property
    def all(self) -> list[int]:
        return list(self.prefix) + list(self.body)


def tokenize_prefix(tokenize: Tokenize, template: Template) -> tuple[int, ...]:
    return tuple(tokenize(template.prefix(), True))


def tokenize_body(tokenize: Tokenize, template: Template, text: str) -> tuple[int, ...]:
    """The text under check and the closing instructions as plain text, then the answer header."""
    plain = tokenize(template.body(text), False)
    return tuple(plain) + tuple(tokenize(ANSWER_HEADER, True))


def tokenize_prompt(tokenize: Tokenize, template: Template, text: str) -> PromptTokens:
    return PromptTokens(tokenize_prefix(tokenize, template), tokenize_body(tokenize, template, text))


def parse_policy(spec: str | None, template: Template = LLAMA_GUARD_3_8B) -> tuple[str, ...]:
    """Category codes that count, from ``"all"``, ``""`` (all), or a list like ``"S1, S3, S10-S12"``."""
    known = list(template.hazards)
    if spec is None or spec.strip().lower() in ("", "all", "*"):
        return tuple(known)
    chosen: list[str] = []
    for part in spec.replace(";", ",").replace(" ", ",").split(","):
        part = part.strip().upper()
        if not part:
            continue
        if "-" in part:
            first, _, last = part.partition("-")
            last = last if last.startswith("S") else "S" + last
            if first not in known or last not in known or known.index(first) > known.index(last):
                raise ValueError(f"unknown category range {part!r}; use codes {known[0]}–{known[-1]}")
            chosen += known[known.index(first) : known.index(last) + 1]
        elif part in known:
            chosen.append(part)
        else:
            raise ValueError(f"unknown category {part!r}; use codes {known[0]}–{known[-1]}, e.g. 'S1,S10-S12' or 'all'")
    if not chosen:
        raise ValueError("no category selected; use 'all' or codes such as 'S1,S10'")
    return tuple(code for code in known if code in chosen)
