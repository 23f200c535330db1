"""The pure parts of the category reports: plots, the labels CSV and what a report counts."""

import base64
import csv
import io

import pytest
from PIL import Image

from mining_assets.reports.category_counts import (
    PartitionReport,
    image_name,
    ordered,
    other_label,
    plotted,
    report_id,
    unique_names,
)
from mining_assets.reports.labels_csv import LabelRow, labels_csv, spreadsheet_safe
from mining_assets.reports.plots import (
    DPI,
    WIDTH_IN,
    data_uri,
    distribution_png,
    plain_label,
    shares_png,
    side_by_side_png,
)

TRICKY = ["$x$", "$", "$$", r"$\frac{1}{$", "a $5 and $6 b", "\\", "<b>x</b>", "^_{}%#&", "日本語のラベル", "x" * 200]


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_plots_are_the_same_bytes_for_the_same_input():
    counts = {"street": 4, "nature": 2, "<b>x</b>": 1}
    by_dataset = {"REAL": counts, "GEN": {"street": 1, "room": 5}}
    categories = ["street", "nature", "<b>x</b>", "room"]
    frames = {"REAL": 5, "GEN": 6}
    assert distribution_png(counts, "REAL") == distribution_png(dict(counts), "REAL")
    assert side_by_side_png(by_dataset, categories) == side_by_side_png(by_dataset, list(categories))
    assert shares_png(by_dataset, frames, categories) == shares_png(by_dataset, frames, categories)
    png = distribution_png(counts, "REAL")
    assert png.startswith(b"\x89PNG") and b"tEXt" not in png and b"tIME" not in png  # no software, no timestamp
    assert decode(png).size[0] == WIDTH_IN * DPI


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # a font without CJK: boxes, not a failure
@pytest.mark.parametrize("label", TRICKY)
def test_labels_that_look_like_mathtext_or_markup_are_drawn_as_text(label):
    counts = {label: 3, "plain": 1}
    assert decode(distribution_png(counts, f"title {label}")).format == "PNG"
    by_dataset = {label: counts, "other": {"plain": 2}}
    assert decode(side_by_side_png(by_dataset, [label, "plain"])).format == "PNG"
    assert decode(shares_png(by_dataset, {label: 3, "other": 2}, [label, "plain"])).format == "PNG"


def test_plain_label_escapes_dollars_and_cuts_long_text():
    assert plain_label("$x$ costs $5") == r"\$x\$ costs \$5"
    assert plain_label("a\n  b") == "a b"
    cut = plain_label("y" * 100, limit=40)
    assert len(cut) == 40 and cut.endswith("…")


def test_empty_input_draws_a_placeholder():
    assert decode(distribution_png({}, "nothing")).format == "PNG"
    assert decode(side_by_side_png({}, [])).format == "PNG"
    assert decode(shares_png({"a": {}}, {"a": 0}, ["x"])).format == "PNG"


def test_a_full_report_plot_stays_small():
    categories = [f"category number {n} with a long name" for n in range(31)]
    by_dataset = {f"dataset {d}": {c: (n * 7 + d) % 50 for n, c in enumerate(categories)} for d in range(4)}
    for png in (
        distribution_png(by_dataset["dataset 0"], "dataset 0"),
        side_by_side_png(by_dataset, categories),
        shares_png(by_dataset, dict.fromkeys(by_dataset, 60), categories),
    ):
        assert len(png) < 100_000
        assert decode(png).size[1] <= 16 * DPI


def test_data_uri_holds_the_png():
    png = distribution_png({"a": 1}, "a")
    uri = data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.removeprefix("data:image/png;base64,")) == png


def test_labels_csv_quotes_keeps_markup_and_defuses_formulas():
    rows = [
        LabelRow("IMG_1.JPG", '<script>alert(1)</script>, "quoted"', ["street", "<b>x</b>"]),
        LabelRow("=cmd|' /C calc'!A0", '=HYPERLINK("http://x")', ["-minus", "plus"]),
        ("@name.png", None, []),
        LabelRow("ünïcode.png", "line one\nline two", ["日本"]),
    ]
    data = labels_csv(rows)
    text = data.decode("utf-8")
    assert '"<script>alert(1)</script>, ""quoted"""' in text  # csv quoting, markup as written
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [
        ["image_name", "description", "categories"],
        ["IMG_1.JPG", '<script>alert(1)</script>, "quoted"', "street; <b>x</b>"],
        ["'=cmd|' /C calc'!A0", '\'=HYPERLINK("http://x")', "'-minus; plus"],
        ["'@name.png", "", ""],
        ["ünïcode.png", "line one\nline two", "日本"],
    ]


@pytest.mark.parametrize(
    ("text", "safe"),
    [("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("a=1", "a=1"), ("", "")],
)
def test_spreadsheet_safe(text, safe):
    assert spreadsheet_safe(text) == safe


@pytest.mark.parametrize(
    ("listed", "source_url", "expected"),
    [
        ("IMG_0001.JPG", "s3://bucket/real/IMG_0001.JPG", "IMG_0001.JPG"),
        (None, "s3://bucket/real/sub/a%20b.jpg", "a b.jpg"),
        ("  ", "https://example.com/photos/k1.jpg?w=100#top", "k1.jpg"),
        (None, "s3://bucket/", "frame-1"),
        (None, None, "frame-1"),
    ],
)
def test_image_name(listed, source_url, expected):
    assert image_name(listed, source_url, "frame-1") == expected


def test_counts_follow_the_list_order_and_plots_sum_the_rest():
    order = ["a", "b", "c", "d"]
    report = PartitionReport("p", "P", "REAL", [LabelRow("1", None, ["c", "a", "c"]), LabelRow("2", None, ["zz", "c"])])
    assert report.counts(order) == {"a": 1, "c": 2, "zz": 1}  # a category once per frame; unlisted last
    assert ordered({"zz": 1, "yy": 3, "b": 1}, order) == ["b", "yy", "zz"]
    shown, values = plotted({"p": {"a": 1, "b": 5, "c": 2, "d": 4}, "q": {"a": 1}}, order, 2)
    assert shown == ["b", "d", other_label(2)]  # the two most frequent, in list order, then the rest summed
    assert values == {"p": {"b": 5, "d": 4, other_label(2): 3}, "q": {"b": 0, "d": 0, other_label(2): 1}}
    assert plotted({"p": {"a": 1}}, order, 30) == (["a"], {"p": {"a": 1}})


def test_report_id_names_the_rows_and_settings():
    def reports(category: str) -> list[PartitionReport]:
        return [PartitionReport("p", "P", "REAL", [LabelRow("1", "d", [category])])]

    first = report_id(reports("a"), ["a", "b"], 30)
    assert first == report_id(reports("a"), ["a", "b"], 30) and len(first) == 16
    assert first != report_id(reports("b"), ["a", "b"], 30)
    assert first != report_id(reports("a"), ["a", "b"], 10)
    assert first != report_id(reports("a"), ["b", "a"], 30)


def test_shared_names_are_made_distinct():
    reports = [PartitionReport("a", "same", None), PartitionReport("b", "same", None), PartitionReport("c", "c", None)]
    assert unique_names(reports, str.upper) == {"a": "same [A]", "b": "same [B]", "c": "c"}
