"""`make bench` keeps the README's copy of the results table current (issue #9)."""

from bench.run import TABLE_END, TABLE_START, update_readme


def test_the_table_between_the_markers_is_replaced_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{TABLE_START}\n| old |\n{TABLE_END}\n\nafter\n")
    assert update_readme("| new |\n", readme)
    assert readme.read_text() == f"# title\n\n{TABLE_START}\n| new |\n{TABLE_END}\n\nafter\n"


def test_without_markers_nothing_is_written(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    assert not update_readme("| new |\n", readme)
    assert readme.read_text() == "# title\n"
