"""The categories of the real-model world: open-ended prompts whose valid answers form a known, finite set.

Each category is a set of valid items (each with the spellings the verifier accepts) and a few phrasings of the same
question. Where a maintained data package holds the set, the set comes from it:

* countries by continent: `country_converter`'s country table (UN member states and the Vatican, the Holy See's
  state, a UN observer; its `continent` and `Continent_7` columns), read as its data file because its
  `CountryConverter` class cannot load that file under pandas 3 (Namibia's ISO code "NA" becomes a missing value);
* US states: the `us` package (the 50 states, no territories);
* chemical elements: `periodictable` (elements 1–118; its neutron, element 0, is left out).

Only tiny closed sets (planets, days of the week, months, colours of the rainbow, oceans) are written here. A few
common English names the packages lack ("Czech Republic", "Ivory Coast", "Turkey", British element spellings) are
extra spellings of the package's item; a test checks that `country_converter`'s own name patterns agree with each one.
A few names contain an item's name but name no item ("Northern Ireland", "Washington D.C."): `NOT_ITEMS` lists them so
the verifier does not read them as Ireland or Washington.
"""

from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass
from functools import cache

REAL_EXTRA_HINT = 'install the real-model extra: pip install -e ".[real]" (`make demo-real` does it)'


@dataclass(frozen=True)
class Item:
    """One valid answer: its display name and every spelling the verifier accepts (the name first)."""

    name: str
    spellings: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    """A question with a finite set of valid answers, asked in several phrasings."""

    key: str
    items: tuple[Item, ...]
    phrasings: tuple[str, ...]
    source: str  # where the valid set comes from (a package, or "by hand")
    # Known items of the same kind that are not valid (the countries of other continents): an answer naming one of
    # them names no valid item, even where a valid name is part of it ("Papua New Guinea" is not Guinea)
    others: tuple[Item, ...] = ()
    # Names that contain an item's spelling but name no item of the kind ("Northern Ireland" is not Ireland)
    not_items: tuple[str, ...] = ()

    def item(self, name: str) -> Item:
        """The item called `name` (KeyError naming the category otherwise)."""
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"category {self.key!r} has no item {name!r}")


# Common English names of countries that country_converter's table spells otherwise (its regexes accept each one)
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "Bosnia and Herzegovina": ("Bosnia",),
    "Brunei Darussalam": ("Brunei",),
    "Cabo Verde": ("Cape Verde",),
    # "Congo" alone is the Republic of the Congo, as in the UN's and ISO 3166's short names
    "Congo Republic": ("Republic of the Congo", "Republic of Congo", "Congo-Brazzaville", "Congo"),
    "Côte d'Ivoire": ("Ivory Coast",),
    "Czechia": ("Czech Republic",),
    "DR Congo": (
        "Democratic Republic of the Congo",
        "Democratic Republic of Congo",
        "Congo, Democratic Republic",
        "Congo-Kinshasa",
        "DRC",
    ),
    "Eswatini": ("Swaziland",),
    "Gambia": ("The Gambia",),
    "Myanmar": ("Burma",),
    "North Macedonia": ("Macedonia",),
    "Timor-Leste": ("East Timor",),
    "Türkiye": ("Turkey",),
    "United Kingdom": ("UK", "Great Britain", "Britain"),
    "Vatican": ("Vatican City", "Holy See"),
    "Vietnam": ("Viet Nam",),
}
# Sovereign states outside the UN's members, in the valid sets too: the Vatican (the Holy See's state, a UN observer).
# The SFT heads are drawn from the UN members alone (world.RealWorld.head), so adding one leaves the SFT data as it was
NON_MEMBER_STATES: tuple[str, ...] = ("Vatican",)
# Names that contain a country's or a state's name but name none ("Northern Ireland" is part of the United Kingdom)
_COUNTRY_NOT_ITEMS = ("Northern Ireland",)
NOT_ITEMS: dict[str, tuple[str, ...]] = {
    "european_country": _COUNTRY_NOT_ITEMS,
    "asian_country": _COUNTRY_NOT_ITEMS,
    "african_country": _COUNTRY_NOT_ITEMS,
    "south_american_country": _COUNTRY_NOT_ITEMS,
    "us_state": ("Washington D.C.", "Washington D. C.", "Washington, District of Columbia"),
}
# periodictable spells elements the American way
ELEMENT_ALIASES: dict[str, tuple[str, ...]] = {
    "Aluminum": ("Aluminium",),
    "Cesium": ("Caesium",),
    "Sulfur": ("Sulphur",),
}

PHRASINGS: dict[str, tuple[str, ...]] = {
    "european_country": (
        "Name a country in Europe.",
        "Give me the name of one European country.",
        "Tell me a European country.",
    ),
    "asian_country": ("Name a country in Asia.", "Give me the name of one Asian country.", "Tell me an Asian country."),
    "african_country": (
        "Name a country in Africa.",
        "Give me the name of one African country.",
        "Tell me an African country.",
    ),
    "south_american_country": (
        "Name a country in South America.",
        "Give me the name of one South American country.",
        "Tell me a South American country.",
    ),
    "us_state": ("Name a US state.", "Give me the name of one state of the United States.", "Tell me a US state."),
    "chemical_element": (
        "Name a chemical element.",
        "Give me the name of one chemical element.",
        "Tell me a chemical element.",
    ),
    "planet": (
        "Name a planet of the solar system.",
        "Give me the name of one planet in our solar system.",
        "Tell me a planet of the solar system.",
    ),
    "weekday": ("Name a day of the week.", "Give me the name of one day of the week.", "Tell me a day of the week."),
    "month": ("Name a month of the year.", "Give me the name of one month.", "Tell me a month of the year."),
    "rainbow_colour": (
        "Name a colour of the rainbow.",
        "Give me one of the colours of the rainbow.",
        "Tell me a colour of the rainbow.",
    ),
    "ocean": ("Name an ocean.", "Give me the name of one of the world's oceans.", "Tell me an ocean."),
}

# The tiny closed sets, written by hand (the only sets not taken from a data package)
HAND_WRITTEN: dict[str, tuple[Item, ...]] = {
    "planet": tuple(
        Item(n, (n,)) for n in ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")
    ),
    "weekday": tuple(
        Item(n, (n,)) for n in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    ),
    "month": tuple(
        Item(n, (n,))
        for n in (
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        )
    ),
    "rainbow_colour": tuple(Item(n, (n,)) for n in ("Red", "Orange", "Yellow", "Green", "Blue", "Indigo", "Violet")),
    "ocean": (
        Item("Pacific Ocean", ("Pacific Ocean", "Pacific")),
        Item("Atlantic Ocean", ("Atlantic Ocean", "Atlantic")),
        Item("Indian Ocean", ("Indian Ocean",)),
        Item("Arctic Ocean", ("Arctic Ocean", "Arctic")),
        Item("Southern Ocean", ("Southern Ocean", "Antarctic Ocean")),
    ),
}


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"The real-model world needs the package {module!r}: {REAL_EXTRA_HINT}") from err


@cache
def country_table() -> tuple[dict[str, str], ...]:
    """The UN member states and `NON_MEMBER_STATES` in `country_converter`'s country table, one dict of its columns
    per country."""
    _import("country_converter")
    table = importlib.resources.files("country_converter").joinpath("country_data.tsv")
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return tuple(
        row for row in rows if (row["UNmember"] or row["name_short"] in NON_MEMBER_STATES) and not row["obsolete"]
    )


def countries(column: str, value: str) -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """The states of `country_table` whose `column` (`continent` or `Continent_7`) is `value`, and all the others."""
    inside, outside = [], []
    for row in country_table():
        name = row["name_short"]
        spellings = dict.fromkeys((name, row["name_official"], *COUNTRY_ALIASES.get(name, ())))
        (inside if row[column] == value else outside).append(Item(name, tuple(spellings)))
    return tuple(inside), tuple(outside)


def us_states() -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """The 50 states of the `us` package (`us.states.STATES`: no territories, no District of Columbia)."""
    return tuple(Item(state.name, (state.name,)) for state in _import("us").states.STATES), ()


def chemical_elements() -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """Elements 1–118 of `periodictable` (its element 0, the neutron, is not one)."""
    items = []
    for element in _import("periodictable").elements:
        if element.number > 0:
            name = element.name.capitalize()
            items.append(Item(name, (name, *ELEMENT_ALIASES.get(name, ()))))
    return tuple(items), ()


SOURCES = {
    "european_country": (
        lambda: countries("continent", "Europe"),
        "country_converter (UN members and the Vatican, continent)",
    ),
    "asian_country": (
        lambda: countries("continent", "Asia"),
        "country_converter (UN members and the Vatican, continent)",
    ),
    "african_country": (
        lambda: countries("continent", "Africa"),
        "country_converter (UN members and the Vatican, continent)",
    ),
    "south_american_country": (
        lambda: countries("Continent_7", "South America"),
        "country_converter (UN members and the Vatican, Continent_7)",
    ),
    "us_state": (us_states, "us (us.states.STATES)"),
    "chemical_element": (chemical_elements, "periodictable (elements 1-118)"),
}


@cache
def category(key: str) -> Category:
    """The category `key` (one of `PHRASINGS`), its valid set loaded from its source."""
    if key not in PHRASINGS:
        raise KeyError(f"Unknown category {key!r}; known: {', '.join(PHRASINGS)}")
    if key in HAND_WRITTEN:
        return Category(key, HAND_WRITTEN[key], PHRASINGS[key], "by hand", not_items=NOT_ITEMS.get(key, ()))
    load, source = SOURCES[key]
    items, others = load()
    return Category(key, items, PHRASINGS[key], source, others, NOT_ITEMS.get(key, ()))


CATEGORY_KEYS: tuple[str, ...] = tuple(PHRASINGS)
