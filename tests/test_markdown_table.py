"""The reports' one markdown-table writer and its cell formats."""

from divalign.markdown_table import interval, markdown_table, mean_std, number


def test_a_table_is_its_header_a_rule_and_a_line_per_row_with_empty_cells_one_space_wide():
    assert markdown_table(["model", "seeds", "validity"], [["truth", "", 1.0], ["ce SFT", "0, 1", "0.500"]]) == [
        "| model | seeds | validity |",
        "|---|---|---|",
        "| truth | | 1.0 |",
        "| ce SFT | 0, 1 | 0.500 |",
    ]
    assert markdown_table(["a"]) == ["| a |", "|---|"]


def test_numbers_intervals_and_spreads():
    assert (number(None), number(0.12345), number(0.5, 2, signed=True)) == ("n/a", "0.123", "+0.50")
    ci = {"estimate": 0.25, "ci_low": -0.1, "ci_high": 0.6, "method": "percentile"}
    assert interval(ci) == "+0.250 [-0.100, +0.600]"
    assert interval(ci, signed=False, notes=True) == "0.250 [-0.100, 0.600] (percentile)"
    assert interval({"estimate": 0.1, "note": "one seed"}, notes=True) == "+0.100 (no CI: one seed)"
    assert interval({"estimate": None}) == interval(None) == "n/a"
    assert mean_std(0.5, None) == "0.500 ± n/a" and mean_std(-0.1, 0.02, signed=True) == "-0.100 ± 0.020"
