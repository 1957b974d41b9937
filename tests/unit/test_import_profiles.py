"""Pure steps of `tagstream import profiles`: column mapping and typed values."""

from __future__ import annotations

import pytest

from services.cli.import_profiles import Column, MappingError, columns_for, row_record, typed_value


class TestColumnsFor:
    def test_header_suffix_sets_the_type_and_identifier_names_identify(self):
        """'age:number' is a number attribute; 'user_id' is the external user id."""
        columns = columns_for(["user_id", "age:number", "plan"], None)
        assert [(c.target, c.type, c.identity) for c in columns] == [
            ("external_user_id", "string", True),
            ("age", "number", False),
            ("plan", "string", False),
        ]

    def test_unknown_type_or_no_identifier_is_refused(self):
        """A header type we do not know, or no identifier column at all, stops the import."""
        with pytest.raises(MappingError, match="type 'money'"):
            columns_for(["email", "price:money"], None)
        with pytest.raises(MappingError, match="no identifier column"):
            columns_for(["first_name"], None)


class TestTypedValue:
    @pytest.mark.parametrize(
        ("kind", "text", "expected"),
        [
            ("number", "31", "31"),
            ("number", "182.5", "182.5"),
            ("boolean", "Yes", "true"),
            ("boolean", "0", "false"),
            ("date", "2024-02-29", "2024-02-29"),
            ("string", "Dee, Jr.", "Dee, Jr."),
        ],
    )
    def test_values_get_canonical_text(self, kind, text, expected):
        """Each type's accepted spellings become one canonical text."""
        assert typed_value(Column("h", "a", kind, False), text) == expected

    @pytest.mark.parametrize(
        ("kind", "text"), [("number", "thirty"), ("number", "nan"), ("boolean", "maybe")]
    )
    def test_bad_values_raise(self, kind, text):
        """A value that is not of the column's type is a ValueError (the row is rejected)."""
        with pytest.raises(ValueError):
            typed_value(Column("h", "a", kind, False), text)


class TestRowRecord:
    def test_empty_cells_are_left_out(self):
        """An empty cell sets nothing; it does not unset the attribute."""
        columns = columns_for(["email", "city", "age:number"], None)
        record = row_record(columns, {"email": "a@b.c", "city": "", "age:number": "7"}, "m-1", 0)
        assert [a["name"] for a in record["attributes"]] == ["age"]
        assert record["identity"]["email"] == "a@b.c"
