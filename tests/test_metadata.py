from mining_assets.metadata import markdown_table


def test_markdown_tables_escape_untrusted_text():
    table = markdown_table(["title"], [["<script>x</script> | a\nb"], [None]])
    assert table.splitlines() == ["| title |", "|---|", "| &lt;script&gt;x&lt;/script&gt; &#124; a b |", "|  |"]
    assert markdown_table(["a"], [], empty="_nothing_") == "_nothing_"
