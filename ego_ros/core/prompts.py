"""Every instruction the engine gives the LVLM, in one place, per model family.

Sentinels ``<ego:NAME>`` mark where visual blocks (the query image or clip, concept memories)
go; the backend frames them with the family's image delimiters. Prompts are plain text so a
family that needs other wording overrides fields in :data:`FAMILY_PROMPTS`, nothing else.
The paper notes (§5) that full reliance on the LVLM needs an instruction tailored to the
model: this is where it is tailored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Prompts:
    # Concept introduction (paper §3.1, §3.3)
    area: str = ("What percentage of the image does the main subject occupy? "
                 "Answer with a number between 0 and 100.")
    keywords: str = ("Give a few keywords describing the main subject of the image, "
                     "separated by commas.")
    calibration: str = "Describe the main foreground object in the image in a few words."
    describe: str = "Describe the image."
    # Inference (paper §3.5): the memory block, then the query, then the task
    memory_header: str = ("These are the user's personal concepts, "
                          "each name followed by its image:\n")
    memory_item: str = "{name}: <ego:{key}>\n"
    query_image: str = "Query image: <ego:query>\n"
    query_clip: str = "Query video: <ego:query>\n"
    # The name comes last: the engine runs the words all per-concept questions share once
    # and only "{name}?" + the turn change per concept (EgoEngine._questions). Like every
    # prompt here, its accuracy has not been measured on a real checkpoint (none can run
    # where this is built): `ego-ros eval` on a real model is how to compare wordings; any
    # wording works with the split, e.g. the paper-like "Is {name} in the query? Answer yes
    # or no." (longer per concept: 19-20 tokens instead of 7-8).
    recognize_one: str = "Answer yes or no. Does the query show {name}?"
    recognize_joint: str = ("Which of these are in the query: {names}? "
                            "Answer with their names separated by commas, or none.")
    caption: str = ("Write a short caption of the query. "
                    "If one of the user's concepts appears, refer to it by its name.")
    ask: str = "{question}"
    choice_suffix: str = "\nAnswer with the option's letter."


DEFAULT = Prompts()
# Families needing different wording override fields here.
FAMILY_PROMPTS: dict[str, Prompts] = {
    "qwen2_5_vl": DEFAULT,
    "internvl": replace(DEFAULT),
}


def prompts_for(family: str) -> Prompts:
    return FAMILY_PROMPTS.get(family, DEFAULT)
