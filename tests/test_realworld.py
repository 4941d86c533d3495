"""The real-model world without the model: the verifier on hand-written answers, the valid sets from their data
packages, the SFT data's distribution and prompt files, the verifier's metrics, by hand."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from divalign.distributions import zipf_probs
from divalign.realworld.answer_metrics import category_coverage, entropy, prompt_scores, score_groups
from divalign.realworld.catalog import (
    CATEGORY_KEYS,
    COUNTRY_ALIASES,
    ELEMENT_ALIASES,
    HAND_WRITTEN,
    NON_MEMBER_STATES,
    category,
    country_table,
)
from divalign.realworld.verifier import identify, names_valid_item, normalise
from divalign.realworld.world import RealWorld, RealWorldConfig

REPO = Path(__file__).resolve().parents[1]

# ----- the verifier on hand-written answers -----

ACCEPTED = [
    ("european_country", "France", "France"),
    ("european_country", "france", "France"),
    ("european_country", "FRANCE.", "France"),
    ("european_country", "  France!  ", "France"),
    ("european_country", "the Netherlands", "Netherlands"),
    ("european_country", "Kingdom of the Netherlands", "Netherlands"),
    ("european_country", "Czech Republic", "Czechia"),
    ("european_country", "U.K.", "United Kingdom"),
    ("european_country", "Great Britain", "United Kingdom"),
    ("european_country", "United Kingdom of Great Britain and Northern Ireland", "United Kingdom"),
    ("european_country", "Ireland", "Ireland"),
    ("european_country", "Bosnia and Herzegovina", "Bosnia and Herzegovina"),
    ("asian_country", "Türkiye", "Türkiye"),
    ("asian_country", "Turkiye", "Türkiye"),
    ("asian_country", "Turkey", "Türkiye"),
    ("asian_country", "South Korea", "South Korea"),
    ("asian_country", "Republic of Korea", "South Korea"),
    ("african_country", "Côte d'Ivoire", "Côte d'Ivoire"),
    ("african_country", "Cote d’Ivoire", "Côte d'Ivoire"),
    ("african_country", "Ivory Coast", "Côte d'Ivoire"),
    ("african_country", "Niger", "Niger"),
    ("african_country", "Nigeria", "Nigeria"),
    ("african_country", "Sudan", "Sudan"),
    ("african_country", "South Sudan", "South Sudan"),
    ("african_country", "Guinea", "Guinea"),
    ("african_country", "Guinea-Bissau", "Guinea-Bissau"),
    ("african_country", "Equatorial Guinea", "Equatorial Guinea"),
    ("african_country", "The Democratic Republic of the Congo", "DR Congo"),
    ("african_country", "Republic of the Congo", "Congo Republic"),
    ("african_country", "Congo", "Congo Republic"),  # the UN's and ISO 3166's short name of the Republic of the Congo
    ("african_country", "Republic of Congo", "Congo Republic"),
    ("african_country", "Congo-Brazzaville", "Congo Republic"),
    ("african_country", "Democratic Republic of Congo", "DR Congo"),
    ("african_country", "Congo, Democratic Republic of the", "DR Congo"),
    ("african_country", "Congo-Kinshasa", "DR Congo"),
    ("european_country", "Vatican City", "Vatican"),  # a sovereign state, though not a UN member
    ("european_country", "The Holy See", "Vatican"),
    ("european_country", "Republic of Ireland", "Ireland"),
    ("us_state", "Washington", "Washington"),
    ("us_state", "Washington State", "Washington"),
    ("south_american_country", "Brazil", "Brazil"),
    ("us_state", "Virginia", "Virginia"),
    ("us_state", "West Virginia", "West Virginia"),
    ("us_state", "new york", "New York"),
    ("us_state", "Arkansas", "Arkansas"),
    ("chemical_element", "Aluminium", "Aluminum"),
    ("chemical_element", "aluminum", "Aluminum"),
    ("chemical_element", "Sulphur", "Sulfur"),
    ("chemical_element", "Oganesson", "Oganesson"),
    ("planet", "Mars", "Mars"),
    ("planet", "the Earth", "Earth"),
    ("weekday", "Sunday", "Sunday"),
    ("month", "May", "May"),
    ("month", "may", "May"),
    ("month", "Is it May? Yes.", "May"),  # "it May" ends a question: the month
    ("month", "May, I think.", "May"),
    ("rainbow_colour", "Indigo", "Indigo"),
    ("ocean", "the Pacific", "Pacific Ocean"),
    ("ocean", "Indian Ocean", "Indian Ocean"),
]
INSIDE_A_SENTENCE = [
    ("european_country", "I would say the Netherlands.", "Netherlands"),
    ("european_country", "A country in Europe is France.", "France"),
    ("us_state", "The state I'm referring to is New York.", "New York"),
    ("us_state", "In the US, the state of California is on the Pacific coast.", "California"),
    ("chemical_element", "Silicon (Si)", "Silicon"),
    ("chemical_element", "One of the most fundamental elements is hydrogen.", "Hydrogen"),
    ("planet", "The planet is Mars!", "Mars"),
    ("weekday", "E92 - the factory's day of the week is Monday.", "Monday"),
    ("month", "It may be June.", "June"),  # "may" the verb is not the month
    ("month", "May I suggest June?", "June"),
    ("month", "Answer: June. It may vary.", "June"),
    ("month", "They may not know, but May is a month.", "May"),
    ("european_country", "Belfast is in Northern Ireland, so Ireland.", "Ireland"),
    ("us_state", "Washington D.C. is not a state; Maryland is.", "Maryland"),
]
REJECTED = [
    ("european_country", "Germay"),  # misspelt
    ("european_country", "Frances"),  # not the whole word
    ("european_country", "Holland"),  # a region; country_converter does not take it for the Netherlands
    ("european_country", "French"),  # an adjective, not the country
    ("european_country", "England"),  # not a UN member state
    ("european_country", "Japan"),  # a country, outside the set
    ("european_country", "Japan or France"),  # two countries: not one answer
    ("european_country", "France, Italy and Spain"),
    ("european_country", "Europe"),
    ("european_country", ""),
    ("african_country", "Papua New Guinea"),  # contains "Guinea", names an Oceanian country
    ("european_country", "Northern Ireland"),  # part of the United Kingdom, not Ireland
    ("asian_country", "Northern Ireland"),  # not Ireland outside the valid set either
    ("us_state", "Washington D.C."),  # the federal district, not the state
    ("us_state", "Washington, D. C."),
    ("us_state", "washington dc"),
    ("us_state", "Washington, District of Columbia"),
    ("month", "It may be."),
    ("month", "You may choose any month."),
    ("us_state", "Puerto Rico"),  # a territory
    ("us_state", "Washingtonia"),
    ("us_state", "Texas and Ohio"),
    ("chemical_element", "H2O"),
    ("chemical_element", "Fe"),  # symbols are not names
    ("chemical_element", "Neutron"),  # periodictable's element 0
    ("planet", "Pluto"),  # a dwarf planet
    ("planet", "The Moon"),
    ("rainbow_colour", "Purple"),
    ("weekday", "Someday"),
    ("ocean", "the Southern hemisphere"),
]


@pytest.mark.parametrize(("key", "text", "item"), ACCEPTED + INSIDE_A_SENTENCE)
def test_the_verifier_accepts_and_says_which_item(key, text, item):
    verdict = identify(text, key)
    assert verdict.valid and verdict.item == item, verdict
    assert names_valid_item(text, key)


@pytest.mark.parametrize(("key", "text"), REJECTED)
def test_the_verifier_rejects_near_misses_lists_and_items_outside_the_set(key, text):
    verdict = identify(text, key)
    assert not verdict.valid and verdict.item is None, verdict
    assert not names_valid_item(text, key)


def test_the_verifier_says_why_it_rejects():
    assert identify("Germay", "european_country").reason == "names no known item"
    assert identify("Japan or France", "european_country").reason == "names 2 items: Japan, France"
    assert identify("Japan", "european_country").reason == "names Japan, outside the valid set"


def test_names_containing_an_item_and_the_verb_may_name_no_item():
    """Names that are not items ("Northern Ireland" is not Ireland, "Washington D.C." is not the state, "may" the verb
    is not the month) name nothing: beside them one item is one answer, and the reason counts only the items."""
    assert identify("Northern Ireland", "european_country").reason == "names no known item"
    assert identify("Washington D.C.", "us_state").reason == "names no known item"
    assert identify("I may say June, or it may be July.", "month").reason == "names 2 items: June, July"
    assert identify("It may be June or May.", "month").reason == "names 2 items: June, May"
    assert identify("Northern Ireland or Japan", "european_country").reason == "names Japan, outside the valid set"


def test_a_name_of_no_item_that_spells_an_item_is_refused(monkeypatch):
    from divalign.realworld import catalog, verifier

    clash = replace(category("us_state"), not_items=("Washington",))
    monkeypatch.setattr(verifier, "category", lambda key: clash)
    verifier._matcher.cache_clear()
    try:
        with pytest.raises(ValueError, match="'Washington' spells both a name of no item and 'Washington'"):
            verifier._matcher("us_state")
    finally:
        verifier._matcher.cache_clear()
    assert catalog.NOT_ITEMS["us_state"]


def test_the_vatican_is_valid_but_never_in_an_sft_head():
    """The Vatican joined the European valid set; the heads are drawn from the UN members, as before it did."""
    world = RealWorld()
    assert "Vatican" in {i.name for i in category("european_country").items}
    assert "Vatican" in world.describe()["categories"]["european_country"]["valid"]
    members = [i.name for i in category("european_country").items if i.name not in NON_MEMBER_STATES]
    size = min(10, math.ceil(len(members) / 2))
    for seed in range(20):
        head = RealWorld(RealWorldConfig(seed=seed)).head("european_country")
        assert "Vatican" not in head
        assert head == tuple(random.Random(f"{seed}:european_country").sample(members, size))


def test_normalise_drops_case_accents_full_stops_and_punctuation():
    assert normalise("  Côte d'Ivoire!  ") == "cote divoire"
    assert normalise("U.S.A., São Tomé") == "usa sao tome"
    assert normalise("Guinea-Bissau\n(GW)") == "guinea bissau gw"


@pytest.mark.parametrize("answer", [None, "a fruit", "European country"])
def test_the_eval_verifier_names_the_column_it_needs(answer):
    with pytest.raises(ValueError, match="answer column to hold a category key"):
        names_valid_item("France", answer)


# ----- the valid sets -----


def test_valid_sets_come_from_their_packages():
    europe = {i.name for i in category("european_country").items}
    assert {"France", "Germany", "Russia", "United Kingdom", "Czechia"} <= europe and "Japan" not in europe
    assert len(europe) == len({r["name_short"] for r in country_table() if r["continent"] == "Europe"})
    assert {i.name for i in category("south_american_country").items} >= {"Brazil", "Argentina", "Peru", "Chile"}
    states = [i.name for i in category("us_state").items]
    assert len(states) == 50 and "Texas" in states and "District of Columbia" not in states
    elements = [i.name for i in category("chemical_element").items]
    assert len(elements) == 118 and elements[0] == "Hydrogen" and elements[-1] == "Oganesson"
    for key in CATEGORY_KEYS:
        cat = category(key)
        assert cat.items and len(cat.phrasings) >= 3
        expected = "by hand" if key in HAND_WRITTEN else ("country_converter", "us", "periodictable")
        assert cat.source == expected if key in HAND_WRITTEN else cat.source.split()[0] in expected
        names = [i.name for i in cat.items]
        assert len(set(names)) == len(names)
        assert not {i.name for i in cat.others} & set(names)


def test_every_country_alias_is_one_the_data_package_recognises():
    """country_converter's own name patterns (regexes over names) map each extra spelling to the same country."""
    rows = {r["name_short"]: r for r in country_table()}
    for name, aliases in COUNTRY_ALIASES.items():
        for alias in aliases:
            assert re.search(rows[name]["regex"], alias, re.IGNORECASE), (name, alias)
            others = [n for n, r in rows.items() if n != name and re.search(r["regex"], alias, re.IGNORECASE)]
            assert others == [], (alias, others)


def test_country_converters_own_loader_fails_under_the_installed_pandas():
    """Why catalog.py reads country_converter's data file itself: its class cannot load it under pandas 3."""
    import country_converter
    import pandas

    if int(pandas.__version__.split(".")[0]) < 3:
        pytest.skip("the failure is pandas 3's")
    with pytest.raises(TypeError):
        country_converter.CountryConverter()


def test_trl_checkpoints_gradients_unless_the_real_recipes_say_no():
    """The real recipes turn gradient checkpointing off because TRL's SFT default turns it on."""
    import yaml
    from trl import SFTConfig

    assert SFTConfig(output_dir="unused", use_cpu=True, bf16=False).gradient_checkpointing is True
    for name in ("ce", "tofu", "gem"):
        recipe = yaml.safe_load((REPO / "recipes" / "real" / f"{name}_sft.yaml").read_text())
        assert recipe["gradient_checkpointing"] is False


def test_element_aliases_spell_package_elements():
    elements = {i.name: i for i in category("chemical_element").items}
    for name, aliases in ELEMENT_ALIASES.items():
        assert set(aliases) <= set(elements[name].spellings)


def test_every_item_is_named_by_its_own_spellings():
    for key in CATEGORY_KEYS:
        for item in category(key).items:
            for spelling in item.spellings:
                assert identify(spelling, key).item == item.name, (key, spelling)


# ----- the world -----


def test_the_world_is_a_pure_function_of_its_config(tmp_path):
    RealWorld().write(tmp_path / "a")
    RealWorld().write(tmp_path / "b")
    for name in ("sft.jsonl", "prompts_eval.jsonl", "prompts_calibration.jsonl", "prompts_probe.jsonl", "world.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert RealWorld(RealWorldConfig(seed=1)).sft_records() != RealWorld().sft_records()


def test_heads_cover_part_of_each_valid_set():
    world = RealWorld()
    for key in world.config.seen:
        head, valid = world.head(key), {i.name for i in category(key).items}
        assert set(head) <= valid and len(set(head)) == len(head)
        assert len(head) == min(10, math.ceil(len(valid) / 2))
    assert len(world.head("planet")) == 4 and len(world.head("chemical_element")) == 10


def test_sft_answers_follow_the_steep_distribution_over_the_head_only():
    config = RealWorldConfig(sft_examples_per_prompt=3000)
    world = RealWorld(config)
    records = world.sft_records()
    assert all(r["prompt"][0]["role"] == "user" and r["completion"][0]["role"] == "assistant" for r in records)
    by_category: dict[str, Counter] = {}
    text_to_key = {p.text: p.category for p in world.prompts(heldout=False)}
    assert set(text_to_key) == {r["prompt"][0]["content"] for r in records}  # no held-out category in SFT
    for r in records:
        by_category.setdefault(text_to_key[r["prompt"][0]["content"]], Counter())[r["completion"][0]["content"]] += 1
    for key, counts in by_category.items():
        head = world.head(key)
        assert set(counts) <= set(head)
        total = sum(counts.values())
        expected = [k**-1.5 for k in range(1, len(head) + 1)]
        for item, weight in zip(head, expected, strict=True):
            assert counts[item] / total == pytest.approx(weight / sum(expected), abs=0.015), (key, item)


def test_prompt_files_carry_the_category_and_split_each_category_s_phrasings(tmp_path):
    """Evaluation and calibration prompts cover every category, seen then held-out, and share no prompt: the last
    phrasing of each category calibrates, the others evaluate."""
    world = RealWorld()
    world.write(tmp_path)
    rows = {
        name: [json.loads(line) for line in (tmp_path / f"prompts_{name}.jsonl").read_text().splitlines()]
        for name in ("eval", "calibration")
    }
    keys = [*world.config.seen, *world.config.heldout]
    assert [r["answer"] for r in rows["calibration"]] == keys
    assert [r["answer"] for r in rows["eval"]] == [key for key in keys for _ in range(2)]
    for key in keys:
        phrasings = category(key).phrasings
        assert [r["prompt"] for r in rows["eval"] if r["answer"] == key] == list(phrasings[:2])
        assert [r["prompt"] for r in rows["calibration"] if r["answer"] == key] == [phrasings[2]]
    two = RealWorld(RealWorldConfig(calibration_phrasings=2)).prompt_sets()
    assert len(two["eval"]) == len(keys) and len(two["calibration"]) == 2 * len(keys)
    with pytest.raises(ValueError, match=r"category 'european_country' has 3 phrasing\(s\): calibration_phrasings 3 "):
        RealWorld(RealWorldConfig(calibration_phrasings=3)).prompt_sets()
    with pytest.raises(ValueError, match="need calibration_phrasings >= 1, got 0"):
        RealWorldConfig(calibration_phrasings=0)
    described = json.loads((tmp_path / "world.json").read_text())
    assert described["categories"]["month"]["sft_distribution"] is None
    assert list(described["categories"]["planet"]["sft_distribution"]) == list(world.head("planet"))


def test_a_category_cannot_be_seen_and_held_out():
    with pytest.raises(ValueError, match="both seen and held out"):
        RealWorldConfig(seen=("planet",), heldout=("planet",))


def test_zipf_by_hand():
    assert zipf_probs(3, 1.0) == pytest.approx([6 / 11, 3 / 11, 2 / 11])


# ----- the verifier's metrics -----


def test_prompt_scores_by_hand():
    texts = ["France", "france.", "Germany", "Japan", "no idea", "I'd say Germany."]
    scores = prompt_scores(texts, "european_country", head=("France", "Italy"))
    assert scores["validity"] == pytest.approx(4 / 6)
    assert scores["distinct_valid"] == 2
    assert scores["coverage"] == pytest.approx(2 / len(category("european_country").items))
    assert scores["entropy"] == pytest.approx(math.log(2))  # France ×2, Germany ×2
    assert scores["outside_head"] == pytest.approx(2 / 4)
    nothing = prompt_scores(["Pluto", "the Moon"], "planet")
    assert nothing["validity"] == 0 and math.isnan(nothing["entropy"]) and math.isnan(nothing["outside_head"])


def test_entropy_by_hand():
    assert entropy([3, 1]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert entropy([5]) == 0 and math.isnan(entropy([]))


def test_score_groups_and_category_coverage_pool_phrasings():
    groups = [["Mars", "Venus"], ["Mars", "Earth", "Pluto"], ["May"]]
    keys = ["planet", "planet", "month"]
    scores = score_groups(groups, keys, {"planet": ("Mars",)})
    assert scores["distinct_valid"] == [2, 2, 1]
    assert scores["outside_head"][0] == pytest.approx(0.5) and math.isnan(scores["outside_head"][2])
    assert category_coverage(groups, keys) == {"planet": 3 / 8, "month": 1 / 12}
    with pytest.raises(ValueError, match="2 sample groups but 1 category keys"):
        score_groups(groups[:2], keys[:1])


# ----- what the demo adds to compare's report -----


def _compare_report(tmp_path: Path) -> tuple[dict, Path]:
    """A compare report of CE and GEM (seed 0) on 2 planet and 2 month prompts, with the samples it kept."""
    samples = tmp_path / "samples"
    texts = {
        ("ce", 1.0): [["Mars", "Mars"], ["Venus", "Pluto"], ["May", "June"], ["no", "no"]],
        ("gem", 0.8): [["Mars", "Earth"], ["Venus", "Saturn"], ["May", "May"], ["July", "no"]],
    }
    for (variant, t), groups in texts.items():
        path = samples / variant / "seed0" / "key" / f"evaluation@T{t:.10g}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"model": f"/models/{variant}", "texts": groups}))
    calibration = {
        "reference": "ce",
        "reference_temperature": 1.0,
        "pooled": {"gem": {}},
        "evaluation": {"n_bootstrap": 200, "seed": 0},
        "seeds": {
            "0": {
                "reference_evaluation": {"quality": [1.0, 0.5, 1.0, 0.0], "diversity": [1.0, 2.0, 2.0, 1.0]},
                "matched": {
                    "gem": {
                        "at_diversity": {"temperature": 0.8, "quality_per_prompt": [1.0, 1.0, 1.0, 0.5]},
                        "at_quality": {"temperature": None},
                    }
                },
            }
        },
    }
    cells = [{"variant": v, "seed": 0, "model": f"/models/{v}"} for v in ("ce", "gem")]
    return {"cells": cells, "calibration": calibration}, samples


def test_the_verifier_rows_and_the_split_differences_by_hand(tmp_path):
    from divalign.realworld.report import split_differences, verifier_rows

    world = RealWorld(RealWorldConfig(seen=("planet",), heldout=("month",)))
    report, samples = _compare_report(tmp_path)
    keys = ["planet", "planet", "month", "month"]
    rows = verifier_rows(report, samples, keys, world)
    assert [(r["variant"], r["at"], r["temperature"]) for r in rows] == [
        ("ce", "T=1", 1.0),
        ("gem", "ce's diversity", 0.8),
    ]
    ce, gem = rows
    head = set(world.head("planet"))
    assert ce["seen_validity"] == pytest.approx(0.75) and ce["seen_distinct_valid"] == pytest.approx(1.0)
    assert ce["heldout_validity"] == pytest.approx(0.5) and ce["heldout_distinct_valid"] == pytest.approx(1.0)
    ce_outside = [sum(i not in head for i in items) / len(items) for items in (["Mars", "Mars"], ["Venus"])]
    assert ce["seen_outside_head"] == pytest.approx(np.mean(ce_outside))
    assert gem["seen_validity"] == pytest.approx(1.0) and gem["heldout_validity"] == pytest.approx(0.75)
    assert "heldout_outside_head" not in gem
    splits = split_differences(report["calibration"], keys, world)
    seen, heldout = splits["seen"]["gem"]["at_diversity"], splits["heldout"]["gem"]["at_diversity"]
    assert seen["difference_of"] == "quality" and seen["pooled"]["estimate"] == pytest.approx(0.25)
    assert heldout["pooled"]["estimate"] == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert splits["seen"]["gem"]["at_quality"] == {"difference_of": "diversity"}  # not matched at any seed
    with pytest.raises(FileNotFoundError, match=r"no samples of /models/gem at T=1\.3"):
        from divalign.realworld.report import sample_texts

        sample_texts(samples, "gem", 0, "/models/gem", 1.3)
